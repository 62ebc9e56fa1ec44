"""JWT authentication (CDS Hooks 2.0.1 "Trusting CDS Clients" and the security best
practices): every failure kind gives the same 401 OperationOutcome."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds.api.auth import (
    AuthError,
    ConfigError,
    JwtVerifier,
    TrustedIssuer,
    bearer_token,
    load_trusted_issuers,
)
from cds.api.errors import UNAUTHORIZED_DIAGNOSTICS
from tests.api.conftest import (
    BASE_URL,
    ISSUER,
    KID,
    Keys,
    TestClient,
    patient_view_request,
    token,
)

PV = "/cds-services/bmd-patient-view"
PV_AUD = f"{BASE_URL}{PV}"

# The example of the CDS Hooks 2.0.1 specification (Trusting CDS Clients), verbatim.
SPEC_TOKEN = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGly"
    "LWVoci5leGFtcGxlLmNvbS9qd2tfdXJpIn0.eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIs"
    "ImF1ZCI6Imh0dHBzOi8vY2RzLmV4YW1wbGUub3JnL2Nkcy1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0"
    "MjI1Njg4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUyMmIwMjEtZTFiNy00NjExLWJhNWItOGVlYzZhMzNh"
    "YzFlIiwidGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0.d1WfLjGRKlcWB94l9"
    "do4cM8REXeYJLL6SGUBO8VHZhfM8mwKYP70EMxJ67War4TQblEpaQrp11wx5p7oPFm2ETYgCicS84vXWEIYTdjooZ"
    "dooCSDf2L8-i4awdoUwiEb"
)
SPEC_JWKS = {
    "keys": [
        {
            "kty": "EC",
            "use": "sig",
            "crv": "P-384",
            "kid": "example-kid",
            "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
            "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI",
            "alg": "ES384",
        }
    ]
}
SPEC_ISS = "https://fhir-ehr.example.com/"
SPEC_JKU = "https://fhir-ehr.example.com/jwk_uri"
SPEC_AUD = "https://cds.example.org/cds-services/some-service"
SPEC_NOW = 1_400_000_000.0  # between the example's iat (2011) and exp (2015)
# The example is valid for 3.5 years, far over the 5-minute default (which refuses it: see
# test_auth_claims.py); the spec-vector tests allow its lifetime.
SPEC_LIFETIME = 1422568860 - 1311280970


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def jwks_transport(jwks: dict[str, Any], calls: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if str(request.url) == SPEC_JKU:
            return httpx.Response(200, json=jwks)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def spec_verifier(
    calls: list[str], now: float = SPEC_NOW, jwks: dict[str, Any] = SPEC_JWKS
) -> JwtVerifier:
    transport = jwks_transport(jwks, calls)
    return JwtVerifier(
        {SPEC_ISS: TrustedIssuer(SPEC_ISS, jku=[SPEC_JKU])},
        clock=lambda: now,
        max_lifetime=SPEC_LIFETIME,
        client_factory=lambda: httpx.AsyncClient(transport=transport),
    )


# --------------------------------------------------------------------------- spec vector


def test_spec_example_token_verifies_with_the_spec_key_fetched_from_its_jku() -> None:
    calls: list[str] = []
    claims = run(spec_verifier(calls).verify(SPEC_TOKEN, [SPEC_AUD]))
    assert claims["jti"] == "ee22b021-e1b7-4611-ba5b-8eec6a33ac1e"
    assert claims["tenant"] == "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"
    assert calls == [SPEC_JKU]


def test_spec_example_token_with_inline_keys_and_a_frozen_clock() -> None:
    verifier = JwtVerifier(
        {SPEC_ISS: TrustedIssuer(SPEC_ISS, keys=SPEC_JWKS["keys"])},
        clock=lambda: SPEC_NOW,
        max_lifetime=SPEC_LIFETIME,
    )
    assert run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))["iss"] == SPEC_ISS


@pytest.mark.parametrize(
    ("now", "audience"),
    [
        (1422568860.0 + 31, SPEC_AUD),  # expired (beyond the 30 s leeway)
        (1311280970.0 - 31, SPEC_AUD),  # issued in the future
        (SPEC_NOW, "https://cds.example.org/cds-services/other-service"),  # aud
    ],
)
def test_spec_example_token_is_refused_outside_its_validity(now: float, audience: str) -> None:
    with pytest.raises(AuthError):
        run(spec_verifier([], now).verify(SPEC_TOKEN, [audience]))


def test_spec_example_token_is_refused_when_replayed() -> None:
    verifier = spec_verifier([])
    run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))
    with pytest.raises(AuthError, match="replay"):
        run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))


def test_spec_example_token_is_refused_with_a_tampered_payload() -> None:
    header, payload, signature = SPEC_TOKEN.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tenant"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="signature"):
        run(spec_verifier([]).verify(f"{header}.{forged}.{signature}", [SPEC_AUD]))


def test_spec_example_token_over_http(make_client: Callable[..., TestClient]) -> None:
    """Through the service: authentication passes, then the unknown service is a 404."""
    client = make_client(
        auth="jwt",
        base_url="https://cds.example.org",
        app_kwargs={"verifier": spec_verifier([])},
    )
    headers = {"Authorization": f"Bearer {SPEC_TOKEN}"}
    first = client.post("/cds-services/some-service", json=patient_view_request(), headers=headers)
    assert first.status_code == 404  # authenticated; 'some-service' is not one of ours
    again = client.post("/cds-services/some-service", json=patient_view_request(), headers=headers)
    assert again.status_code == 401  # the jti was used


def test_spec_example_jku_not_on_the_allowlist_is_never_fetched() -> None:
    calls: list[str] = []
    transport = jwks_transport(SPEC_JWKS, calls)
    verifier = JwtVerifier(
        {SPEC_ISS: TrustedIssuer(SPEC_ISS, jku=["https://fhir-ehr.example.com/other"])},
        clock=lambda: SPEC_NOW,
        client_factory=lambda: httpx.AsyncClient(transport=transport),
    )
    with pytest.raises(AuthError, match="jku"):
        run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))
    assert calls == []


def test_jwks_is_cached_within_its_ttl() -> None:
    calls: list[str] = []
    now = [SPEC_NOW]
    transport = jwks_transport(SPEC_JWKS, calls)
    verifier = JwtVerifier(
        {SPEC_ISS: TrustedIssuer(SPEC_ISS, jku=[SPEC_JKU])},
        clock=lambda: now[0],
        max_lifetime=SPEC_LIFETIME,
        jwks_ttl=300,
        client_factory=lambda: httpx.AsyncClient(transport=transport),
    )
    run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))
    verifier.replay = type(verifier.replay)()
    now[0] += 299
    run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))
    assert len(calls) == 1
    verifier.replay = type(verifier.replay)()
    now[0] += 2
    run(verifier.verify(SPEC_TOKEN, [SPEC_AUD]))
    assert len(calls) == 2


def test_a_key_replaced_under_the_same_kid_is_the_key_checked_after_the_refetch() -> None:
    """Verification keys are built once per key set entry and reused: a set refetched
    with another key under the same kid checks tokens against the new key, not the old."""
    iss, jku, aud = "https://ehr.example/", "https://ehr.example/jwks", "https://cds/x"
    now = [1_700_000_000.0]
    privates = [ec.generate_private_key(ec.SECP384R1()) for _ in range(2)]
    served: list[dict[str, Any]] = []
    for private in privates:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        public.update({"kid": "k", "alg": "ES384"})
        served.append({"keys": [public]})
    current = [served[0]]

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=current[0])

    verifier = JwtVerifier(
        {iss: TrustedIssuer(iss, jku=[jku])},
        clock=lambda: now[0],
        jwks_ttl=60,
        client_factory=lambda: httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )

    def signed(private: ec.EllipticCurvePrivateKey, jti: str) -> str:
        claims = {"iss": iss, "aud": aud, "iat": now[0], "exp": now[0] + 60, "jti": jti}
        return jwt.encode(claims, private, algorithm="ES384", headers={"kid": "k"})

    assert run(verifier.verify(signed(privates[0], "1"), [aud]))["jti"] == "1"
    assert run(verifier.verify(signed(privates[0], "2"), [aud]))["jti"] == "2"  # reused key
    current[0] = served[1]
    now[0] += 61  # past the set's TTL: refetched
    with pytest.raises(AuthError) as refused:
        run(verifier.verify(signed(privates[0], "3"), [aud]))
    assert refused.value.reason == "signature"
    assert run(verifier.verify(signed(privates[1], "4"), [aud]))["jti"] == "4"


# --------------------------------------------------------------------------- over HTTP


def test_valid_token_for_each_endpoint(jwt_client: TestClient, keys: Keys) -> None:
    auth = {"Authorization": f"Bearer {token(keys, f'{BASE_URL}/cds-services')}"}
    assert jwt_client.get("/cds-services", headers=auth).status_code == 200
    body = patient_view_request()
    auth = {"Authorization": f"Bearer {token(keys, [PV_AUD, 'https://other.example'])}"}
    assert jwt_client.post(PV, json=body, headers=auth).status_code == 200
    feedback = {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-23T10:00:00Z",
            }
        ]
    }
    for aud in (f"{PV_AUD}/feedback", PV_AUD):
        auth = {"Authorization": f"Bearer {token(keys, aud)}"}
        assert jwt_client.post(f"{PV}/feedback", json=feedback, headers=auth).status_code == 200


def _other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _unsigned(keys: Keys) -> str:
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "kid": KID, "typ": "JWT"}).encode()
    )
    now = int(time.time())
    payload = base64.urlsafe_b64encode(
        json.dumps({"iss": ISSUER, "aud": PV_AUD, "exp": now + 60, "iat": now, "jti": "x"}).encode()
    )
    return f"{header.rstrip(b'=').decode()}.{payload.rstrip(b'=').decode()}."


def _hmac_with_public_key(keys: Keys) -> str:
    """The classic algorithm-confusion attack: HS256 keyed with the public key."""
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "kid": KID, "typ": "JWT"}).encode())
    payload = b64(
        json.dumps({"iss": ISSUER, "aud": PV_AUD, "exp": now + 60, "iat": now, "jti": "h"}).encode()
    )
    secret = json.dumps(keys.jwks["keys"][0]).encode()
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


FAILURES: dict[str, Callable[[Keys], str | None]] = {
    "no header": lambda k: None,
    "garbage": lambda k: "Bearer not.a.jwt",
    "basic scheme": lambda k: "Basic " + token(k, PV_AUD),
    "alg none": lambda k: "Bearer " + _unsigned(k),
    "hmac": lambda k: "Bearer " + _hmac_with_public_key(k),
    "wrong key": lambda k: "Bearer " + token(k, PV_AUD, key=_other_ec_key()),
    "unknown kid": lambda k: "Bearer " + token(k, PV_AUD, headers={"kid": "nope"}),
    "no kid": lambda k: (
        "Bearer "
        + jwt.encode(
            {
                "iss": ISSUER,
                "aud": PV_AUD,
                "exp": int(time.time()) + 60,
                "iat": int(time.time()),
                "jti": "a",
            },
            k.private,
            algorithm="ES384",
        )
    ),
    "typ": lambda k: "Bearer " + token(k, PV_AUD, headers={"typ": "at+jwt"}),
    "unknown iss": lambda k: "Bearer " + token(k, PV_AUD, iss="https://evil.example/"),
    "aud other endpoint": lambda k: "Bearer " + token(k, f"{BASE_URL}/cds-services/bmd-order-sign"),
    "aud other host": lambda k: "Bearer " + token(k, f"https://evil.example{PV}"),
    "aud missing": lambda k: "Bearer " + token(k, None),  # type: ignore[arg-type]
    "expired": lambda k: "Bearer " + token(k, PV_AUD, exp=int(time.time()) - 31),
    "exp missing": lambda k: "Bearer " + token(k, PV_AUD, exp=None),
    "iat future": lambda k: "Bearer " + token(k, PV_AUD, iat=int(time.time()) + 120),
    "iat missing": lambda k: "Bearer " + token(k, PV_AUD, iat=None),
    "jti missing": lambda k: "Bearer " + token(k, PV_AUD, jti=None),
}


def test_every_failure_kind_gives_the_same_401(
    jwt_client: TestClient, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    bodies = set()
    secrets = []
    with caplog.at_level("DEBUG"):
        for name, make in FAILURES.items():
            value = make(keys)
            headers = {} if value is None else {"Authorization": value}
            if value:
                secrets.append(value.split(" ", 1)[1])
            response = jwt_client.post(PV, json=patient_view_request(), headers=headers)
            assert response.status_code == 401, name
            assert response.headers["www-authenticate"] == "Bearer"
            bodies.add(response.content)
    assert len(bodies) == 1
    body = json.loads(bodies.pop())
    assert body == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "login", "diagnostics": UNAUTHORIZED_DIAGNOSTICS}],
    }
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(secret not in logged for secret in secrets)
    assert "expired" not in body["issue"][0]["diagnostics"]


def test_replayed_jti_is_401(jwt_client: TestClient, keys: Keys) -> None:
    auth = {"Authorization": f"Bearer {token(keys, PV_AUD)}"}
    assert jwt_client.post(PV, json=patient_view_request(), headers=auth).status_code == 200
    assert jwt_client.post(PV, json=patient_view_request(), headers=auth).status_code == 401


def test_discovery_and_feedback_need_the_jwt_too(jwt_client: TestClient) -> None:
    assert jwt_client.get("/cds-services").status_code == 401
    assert jwt_client.post(f"{PV}/feedback", json={"feedback": []}).status_code == 401


def test_401_comes_before_body_checks(jwt_client: TestClient) -> None:
    assert jwt_client.post(PV, content=b"{not json").status_code == 401
    assert jwt_client.post("/cds-services/unknown", json={}).status_code == 401


def test_tenant_checked_when_configured(make_client: Callable[..., TestClient], keys: Keys) -> None:
    client = make_client(
        auth="jwt", trusted_issuers=keys.issuers_file, base_url=BASE_URL, trusted_tenants="t-1,t-2"
    )
    for tenant, status in (("t-2", 200), ("t-3", 401), (None, 401)):
        auth = {"Authorization": f"Bearer {token(keys, PV_AUD, tenant=tenant)}"}
        assert client.post(PV, json=patient_view_request(), headers=auth).status_code == status


@pytest.mark.parametrize("alg", ["RS256", "RS384", "PS256", "PS384", "PS512"])
def test_rsa_algorithms_are_accepted(tmp_path: Path, alg: str) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public["kid"] = "rsa"
    path = tmp_path / "issuers.json"
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [public]}))
    path.write_text(json.dumps({ISSUER: {"jwks_file": "keys.json"}}))
    verifier = JwtVerifier(load_trusted_issuers(path))
    now = int(time.time())
    signed = jwt.encode(
        {"iss": ISSUER, "aud": PV_AUD, "exp": now + 60, "iat": now, "jti": alg},
        private,
        algorithm=alg,
        headers={"kid": "rsa"},
    )
    assert run(verifier.verify(signed, [PV_AUD]))["jti"] == alg


def test_es512_is_not_on_the_list(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP521R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    public["kid"] = "p521"
    verifier = JwtVerifier({ISSUER: TrustedIssuer(ISSUER, keys=[public])})
    now = int(time.time())
    signed = jwt.encode(
        {"iss": ISSUER, "aud": PV_AUD, "exp": now + 60, "iat": now, "jti": "x"},
        private,
        algorithm="ES512",
        headers={"kid": "p521"},
    )
    with pytest.raises(AuthError, match="algorithm"):
        run(verifier.verify(signed, [PV_AUD]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read"),
        ("{}", "expected an object"),
        ('{"https://a/": {}}', "exactly one"),
        ('{"https://a/": {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}', "symmetric"),
        ('{"https://a/": {"jku": ["http://evil.example/jwks"]}}', "https"),
        ('{"https://a/": {"jwks_file": "missing.json"}}', "jwks_file"),
    ],
)
def test_bad_trusted_issuers_files_are_refused_at_start(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "issuers.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_trusted_issuers(path)


def test_jwt_mode_without_trusted_issuers_does_not_start(
    make_client: Callable[..., TestClient],
) -> None:
    with pytest.raises(ValueError, match="OSTEOHOOKS_TRUSTED_ISSUERS"):
        make_client(auth="jwt", base_url=BASE_URL)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer  ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("bearer abc", "abc"),
        ("Bearer abc", "abc"),
    ],
)
def test_bearer_token_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_replay_cache_is_bounded() -> None:
    from cds.api.auth import _ReplayCache

    cache = _ReplayCache(max_entries=10)
    for i in range(100):
        cache.add(f"iss|{i}", 1000.0 + i, now=0.0)
    assert len(cache) <= 10
    assert cache.seen("iss|99", now=0.0)
    cache.add("iss|late", 5000.0, now=4000.0)  # expired entries are dropped
    assert len(cache) == 1


def test_cors_preflight_needs_no_token_but_the_call_does(
    make_client: Callable[..., TestClient], keys: Keys
) -> None:
    client = make_client(
        auth="jwt",
        trusted_issuers=keys.issuers_file,
        base_url=BASE_URL,
        cors_origins="https://ehr.example.org",
    )
    origin = {"Origin": "https://ehr.example.org"}
    preflight = client.options(
        PV,
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    refused = client.post(PV, json=patient_view_request(), headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://ehr.example.org"
    auth = {**origin, "Authorization": f"Bearer {token(keys, PV_AUD)}"}
    assert client.post(PV, json=patient_view_request(), headers=auth).status_code == 200
