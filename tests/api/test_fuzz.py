"""Hypothesis fuzz of request bodies: never a 5xx, and every error is an OperationOutcome."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cds.api import create_app
from cds.settings import Settings
from tests.api.conftest import FakeEvaluator, TestClient, order_request, patient_view_request
from tests.api.test_end_to_end import SERVICE, STORIES, as_request

SERVICES = {
    "patient-view": "bmd-patient-view",
    "order-select": "bmd-order-select",
    "order-sign": "bmd-order-sign",
}


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db"
    app = create_app(Settings(auth="none", database_url=f"sqlite:///{db}"), FakeEvaluator())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(paths(item, (*prefix, index)))
    return out


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    hook = draw(st.sampled_from(sorted(SERVICES)))
    body = patient_view_request() if hook == "patient-view" else order_request(hook)
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = paths(body)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return SERVICES[hook], body


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"]
        assert all(i["diagnostics"] for i in body["issue"])
    else:
        assert isinstance(response.json()["cards"], list)


@given(mutated_requests())
def test_mutated_requests_never_5xx(
    fuzz_client: TestClient, case: tuple[str, dict[str, Any]]
) -> None:
    service, body = case
    check(fuzz_client.post(f"/cds-services/{service}", content=json.dumps(body)))


@given(json_values, st.sampled_from([*SERVICES.values(), "x"]))
def test_arbitrary_json_never_5xx(fuzz_client: TestClient, body: Any, service: str) -> None:
    check(fuzz_client.post(f"/cds-services/{service}", content=json.dumps(body)))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_5xx(fuzz_client: TestClient, raw: bytes) -> None:
    check(fuzz_client.post("/cds-services/bmd-patient-view", content=raw))


@given(json_values)
def test_arbitrary_feedback_never_5xx(fuzz_client: TestClient, body: Any) -> None:
    response = fuzz_client.post("/cds-services/bmd-patient-view/feedback", content=json.dumps(body))
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"


# ------------------------------------------------ the hostile classes, real rules

ROOT = Path(__file__).resolve().parents[2]
STORY_NAMES = sorted(p.name for p in (ROOT / "tests" / "fixtures" / "stories").glob("*.json"))
HUGE = "HUGE-INTEGER-MARKER"

#: What used to answer 500: lone surrogates, integers over 4,300 digits, extreme
#: numbers, dates at the ends of the calendar.
hostile_values = st.one_of(
    st.sampled_from(["\ud800", "x\udfff", "\udc00\ud800"]),
    st.text(max_size=8).map(lambda t: t + "\ud83d"),
    st.just(HUGE),
    st.sampled_from([1e-07, 5e-324, -5e-324, 1e18, -1e18, 1e16, 1e300, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["9999-12-31", "0001-01-01", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"]
    ),
)


@pytest.fixture(scope="module")
def rules_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from datetime import date

    from cds.pipeline import Evaluator

    db = Path(tmp_path_factory.mktemp("fuzz-rules")) / "fuzz.db"
    config = Settings(auth="none", database_url=f"sqlite:///{db}", as_of=date(2026, 11, 23))
    app = create_app(config, Evaluator.from_rules_dir(ROOT / "rules"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@st.composite
def hostile_story_requests(draw: st.DrawFn) -> tuple[str, str]:
    body = as_request(json.loads((STORIES / draw(st.sampled_from(STORY_NAMES))).read_text()))
    service = SERVICE[body["hook"]]
    leaves = [p for p in paths(body) if not isinstance(_at(body, p), dict | list)]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(leaves))
        _at(body, path[:-1])[path[-1]] = draw(hostile_values)
    orders = body.get("context", {}).get("draftOrders", {}).get("entry")
    if isinstance(orders, list) and orders and draw(st.booleans()):
        orders.append(copy.deepcopy(orders[0]))  # the same draft order twice
    text = json.dumps(body).replace(json.dumps(HUGE), "7" * 4301)
    return service, text


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_story_requests())
def test_hostile_values_in_stories_never_5xx(
    rules_client: TestClient, case: tuple[str, str]
) -> None:
    service, text = case
    check(
        rules_client.post(
            f"/cds-services/{service}",
            content=text.encode(),
            headers={"content-type": "application/json"},
        )
    )


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["0001-01-01T00:00:00", "9999-12-31T23:59:59", "9999-12-31T23:59:59.999999"]),
    st.sampled_from(["Z", "+14:00", "-12:00", "+00:00", ""]),
    hostile_values,
)
def test_feedback_with_hostile_values_never_5xx(
    fuzz_client: TestClient, stamp: str, zone: str, comment: Any
) -> None:
    item = {
        "card": "a0d1f7a4-5a8a-4c5e-9d8e-000000000abc",
        "outcome": "overridden",
        "outcomeTimestamp": stamp + zone,
        "overrideReason": {"userComment": comment},
    }
    text = json.dumps({"feedback": [item]}).replace(json.dumps(HUGE), "7" * 4301)
    response = fuzz_client.post(
        "/cds-services/bmd-patient-view/feedback",
        content=text.encode(),
        headers={"content-type": "application/json"},
    )
    check_feedback(response)


def check_feedback(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert all(i["diagnostics"] for i in body["issue"])


@pytest.fixture(scope="module")
def jwt_fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = Path(tmp_path_factory.mktemp("fuzz-jwt"))
    issuers = folder / "issuers.json"
    key = {
        "kty": "EC",
        "crv": "P-384",
        "kid": "k",
        "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
        "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI",
    }
    issuers.write_text(json.dumps({"https://ehr.example/": {"jwks": {"keys": [key]}}}))
    settings = Settings(
        auth="jwt",
        trusted_issuers=issuers,
        base_url="https://cds.example",
        database_url=f"sqlite:///{folder / 'f.db'}",
    )
    with TestClient(create_app(settings, FakeEvaluator()), raise_server_exceptions=False) as client:
        yield client


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


jwt_like = st.builds(
    lambda header, payload, signature: (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}.{signature}"
    ),
    st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jku"]), json_values, max_size=4),
    st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "iat", "jti", "tenant", "nbf"]),
        json_values,
        max_size=7,
    ),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", max_size=40
    ),
)


@given(st.one_of(st.text(max_size=80), jwt_like.map(lambda t: f"Bearer {t}")))
def test_arbitrary_authorization_headers_are_401_never_5xx(
    jwt_fuzz_client: TestClient, value: str
) -> None:
    assume(value.isascii() and "\n" not in value and "\r" not in value)  # sendable as a header
    response = jwt_fuzz_client.post(
        "/cds-services/bmd-patient-view", json={}, headers={"Authorization": value}
    )
    assert response.status_code == 401, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
