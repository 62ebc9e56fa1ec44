"""JWT hardening (issue 12): claims of the wrong type, lifetimes, tenant types, jku
back-off, the audience never taken from the request, one jti store for every worker."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from cds.api.auth import (
    JKU_BACKOFF_FIRST,
    MAX_LIFETIME_SECONDS,
    AuthError,
    JwtVerifier,
    TrustedIssuer,
    jti_key,
    load_trusted_issuers,
)
from cds.settings import Settings
from cds.store import Store
from tests.api.conftest import (
    BASE_URL,
    ISSUER,
    Keys,
    TestClient,
    patient_view_request,
    token,
)

PV = "/cds-services/bmd-patient-view"
PV_AUD = f"{BASE_URL}{PV}"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _call(client: TestClient, signed: str, **headers: str) -> int:
    auth = {"Authorization": f"Bearer {signed}", **headers}
    status: int = client.post(PV, json=patient_view_request(), headers=auth).status_code
    return status


# --------------------------------------------------------------------------- number claims

NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", NON_FINITE, ids=["NaN", "Infinity", "-Infinity"])
def test_non_finite_time_claims_are_refused_every_time(
    jwt_client: TestClient, keys: Keys, claim: str, value: float
) -> None:
    claims: dict[str, Any] = {claim: value}
    signed = token(keys, PV_AUD, **claims)  # PyJWT writes NaN / Infinity literally
    assert _call(jwt_client, signed) == 401
    assert _call(jwt_client, signed) == 401


@pytest.mark.parametrize("value", [True, "1999999999", [1], {"a": 1}, 10**400])
def test_exp_of_another_type_is_refused(keys: Keys, value: Any) -> None:
    verifier = JwtVerifier(load_trusted_issuers(keys.issuers_file))
    with pytest.raises(AuthError, match="exp") as info:
        run(verifier.verify(token(keys, PV_AUD, exp=value), [PV_AUD]))
    assert info.value.reason == "claims"


def test_a_ten_year_token_is_refused(jwt_client: TestClient, keys: Keys) -> None:
    now = int(time.time())
    assert _call(jwt_client, token(keys, PV_AUD, iat=now, exp=now + 10 * 365 * 86400)) == 401


def test_lifetime_bound_is_the_default_and_configurable(
    make_client: Callable[..., TestClient], keys: Keys
) -> None:
    assert Settings().jwt_max_lifetime == MAX_LIFETIME_SECONDS
    now = int(time.time())
    verifier = JwtVerifier(load_trusted_issuers(keys.issuers_file))
    at_bound = token(keys, PV_AUD, iat=now, exp=now + MAX_LIFETIME_SECONDS)
    assert run(verifier.verify(at_bound, [PV_AUD]))["exp"] == now + MAX_LIFETIME_SECONDS
    over = token(keys, PV_AUD, iat=now, exp=now + MAX_LIFETIME_SECONDS + 1)
    with pytest.raises(AuthError, match="lifetime") as info:
        run(verifier.verify(over, [PV_AUD]))
    assert info.value.reason == "lifetime"
    longer = make_client(
        auth="jwt",
        trusted_issuers=keys.issuers_file,
        base_url=BASE_URL,
        jwt_max_lifetime=MAX_LIFETIME_SECONDS * 2,
    )
    assert _call(longer, token(keys, PV_AUD, iat=now, exp=now + MAX_LIFETIME_SECONDS + 1)) == 200


# --------------------------------------------------------------------------- tenant


@pytest.mark.parametrize("tenant", [{"t": 1}, ["t-1"], 7, True, None, ""])
def test_odd_tenant_types_are_a_plain_401(
    make_client: Callable[..., TestClient],
    keys: Keys,
    tenant: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(
        auth="jwt", trusted_issuers=keys.issuers_file, base_url=BASE_URL, trusted_tenants="t-1"
    )
    with caplog.at_level("DEBUG"):
        assert _call(client, token(keys, PV_AUD, tenant=tenant)) == 401
    assert not [r for r in caplog.records if r.exc_info], "verification raised, not refused"
    assert _call(client, token(keys, PV_AUD, tenant="t-1")) == 200


# --------------------------------------------------------------------------- jku back-off

JKU = "https://ehr.test.example/jwks"


def _jku_verifier(keys: Keys, calls: list[str], now: list[float], up: list[bool]) -> JwtVerifier:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if not up[0]:
            raise httpx.ConnectError("down", request=request)
        return httpx.Response(200, json=keys.jwks)

    transport = httpx.MockTransport(handler)
    return JwtVerifier(
        {ISSUER: TrustedIssuer(ISSUER, jku=[JKU])},
        clock=lambda: now[0],
        client_factory=lambda: httpx.AsyncClient(transport=transport),
    )


def test_a_down_jku_is_fetched_once_for_eight_calls_then_retried_with_back_off(
    keys: Keys,
) -> None:
    calls: list[str] = []
    now, up = [time.time()], [False]
    verifier = _jku_verifier(keys, calls, now, up)

    async def eight() -> list[BaseException | dict[str, Any]]:
        return await asyncio.gather(
            *(verifier.verify(token(keys, PV_AUD), [PV_AUD]) for _ in range(8)),
            return_exceptions=True,
        )

    results = run(eight())
    assert all(isinstance(r, AuthError) for r in results)
    assert len(calls) == 1
    for _ in range(8):  # one after the other, still within the back-off
        with pytest.raises(AuthError, match="backing off"):
            run(verifier.verify(token(keys, PV_AUD), [PV_AUD]))
    assert len(calls) == 1
    now[0] += JKU_BACKOFF_FIRST + 0.1  # the first back-off has passed: one new try, fails
    with pytest.raises(AuthError):
        run(verifier.verify(token(keys, PV_AUD), [PV_AUD]))
    assert len(calls) == 2
    now[0] += JKU_BACKOFF_FIRST + 0.1  # the back-off doubled: still waiting
    with pytest.raises(AuthError, match="backing off"):
        run(verifier.verify(token(keys, PV_AUD), [PV_AUD]))
    assert len(calls) == 2
    up[0] = True
    now[0] += JKU_BACKOFF_FIRST * 2
    tokens_now = token(keys, PV_AUD, iat=int(now[0]), exp=int(now[0]) + 60)
    assert run(verifier.verify(tokens_now, [PV_AUD]))["iss"] == ISSUER
    assert len(calls) == 3


def test_eight_unauthenticated_http_calls_make_one_jku_fetch(
    make_client: Callable[..., TestClient], keys: Keys
) -> None:
    calls: list[str] = []
    verifier = _jku_verifier(keys, calls, [time.time()], [False])
    client = make_client(auth="jwt", base_url=BASE_URL, app_kwargs={"verifier": verifier})
    for _ in range(8):
        assert _call(client, token(keys, PV_AUD)) == 401
    assert len(calls) == 1


# --------------------------------------------------------------------------- audience


def test_jwt_auth_without_a_base_url_does_not_start(
    make_client: Callable[..., TestClient], keys: Keys
) -> None:
    with pytest.raises(ValueError, match="OSTEOHOOKS_BASE_URL"):
        make_client(auth="jwt", trusted_issuers=keys.issuers_file)


def test_spoofed_host_and_forwarded_proto_do_not_change_the_audience(
    jwt_client: TestClient, keys: Keys
) -> None:
    other = "http://other-service.example"
    spoof = {"Host": "other-service.example", "X-Forwarded-Proto": "http"}
    assert _call(jwt_client, token(keys, f"{other}{PV}"), **spoof) == 401
    assert _call(jwt_client, token(keys, PV_AUD), **spoof) == 200


# --------------------------------------------------------------------------- jti store


def test_the_service_keeps_jti_in_its_store(jwt_client: TestClient, keys: Keys) -> None:
    signed = token(keys, PV_AUD)
    assert _call(jwt_client, signed) == 200
    store: Store = jwt_client.app.state.service.store  # type: ignore[attr-defined]
    claims = jwt.decode(signed, options={"verify_signature": False})
    assert not store.claim_jti(jti_key(ISSUER, claims["jti"]), claims["exp"], time.time())
    assert _call(jwt_client, signed) == 401


def test_a_jti_the_store_cannot_check_is_a_503_never_let_through(
    jwt_client: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store down the replay guard cannot say whether the token was used before:
    the answer is 503 with Retry-After (the token may be fine: not 401), and no call is
    evaluated."""
    from cds.store.db import StoreUnavailable

    store: Store = jwt_client.app.state.service.store  # type: ignore[attr-defined]

    def down(key: str, expires: float, now: float) -> bool:
        raise StoreUnavailable("jti store: OperationalError: database is locked")

    monkeypatch.setattr(store, "claim_jti", down)
    response = jwt_client.post(
        PV,
        json=patient_view_request(),
        headers={"Authorization": f"Bearer {token(keys, PV_AUD)}"},
    )
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "cards" not in body


def test_two_stores_on_one_sqlite_file_share_the_replay_guard(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = Store(url), Store(url)
    try:
        now = time.time()
        key = jti_key(ISSUER, str(uuid.uuid4()))
        assert first.claim_jti(key, now + 60, now)
        assert not second.claim_jti(key, now + 60, now)
        assert not first.claim_jti(key, now + 60, now)
        # once the token has expired, the same key may be taken again (a new token)
        assert second.claim_jti(key, now + 200, now + 61)
        assert not first.claim_jti(key, now + 200, now + 62)
    finally:
        first.close()
        second.close()


def test_racing_claims_on_one_key_have_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    stores = [Store(url) for _ in range(4)]
    try:
        now = time.time()
        for round_ in range(20):
            key = jti_key(ISSUER, f"race-{round_}")
            wins: list[bool] = []
            barrier = threading.Barrier(8)

            def claim(
                store: Store,
                key: str = key,
                barrier: threading.Barrier = barrier,
                wins: list[bool] = wins,
            ) -> None:
                barrier.wait()
                wins.append(store.claim_jti(key, now + 60, now))

            threads = [threading.Thread(target=claim, args=(stores[i % 4],)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(wins) == [False] * 7 + [True], round_
    finally:
        for store in stores:
            store.close()


def test_expired_jti_rows_are_purged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import func, select

    from cds.store import db

    monkeypatch.setattr(db, "JTI_PURGE_EVERY", 10)
    store = Store(f"sqlite:///{tmp_path / 'purge.db'}")
    try:
        for i in range(9):
            assert store.claim_jti(f"old-{i}", 100.0, 50.0)
        assert store.claim_jti("new", 1000.0, 500.0)  # the tenth claim purges the expired
        with store.engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(db.JtiRow)).scalar_one()
        assert left == 1
    finally:
        store.close()
