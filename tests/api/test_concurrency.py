"""Evaluation runs off the event loop: discovery is answered while a patient is evaluated.

A property of concurrency, not a timing: the evaluator below holds the evaluation until
the test has had its discovery answer; on the event loop that answer could not come."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cds.api.hooks import EVALUATE_IN_THREAD_ENTRIES
from tests.api.conftest import FakeEvaluator, FakeResult, TestClient, patient_view_request

PV = "/cds-services/bmd-patient-view"


class HeldEvaluator(FakeEvaluator):
    """Evaluates only after `release` is set (or gives up after `patience` seconds)."""

    def __init__(self, patience: float = 5.0) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.patience = patience
        self.released_in_time = False

    def evaluate(self, data: Any) -> FakeResult:
        self.entered.set()
        self.released_in_time = self.release.wait(self.patience)
        return super().evaluate(data)


def big_patient_request() -> dict[str, Any]:
    body = patient_view_request()
    observation = {"resourceType": "Observation", "status": "final"}
    body["prefetch"]["observations"]["entry"] = [
        {"resource": {**observation, "id": f"o{i}"}} for i in range(EVALUATE_IN_THREAD_ENTRIES + 1)
    ]
    return body


def test_discovery_is_answered_while_a_big_patient_is_evaluated(
    make_client: Callable[..., TestClient],
) -> None:
    evaluator = HeldEvaluator()
    client = make_client(evaluator)
    statuses: list[int] = []
    call = threading.Thread(
        target=lambda: statuses.append(client.post(PV, json=big_patient_request()).status_code)
    )
    call.start()
    assert evaluator.entered.wait(10)
    discovery = client.get("/cds-services")  # answered while the evaluation is held
    evaluator.release.set()
    call.join(20)
    assert discovery.status_code == 200
    assert evaluator.released_in_time  # discovery came back before the evaluation ended
    assert statuses == [200]
