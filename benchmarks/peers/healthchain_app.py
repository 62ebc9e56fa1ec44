"""HealthChain's trivial CDS Hooks handler: the peer of benchmarks/http_bench.py.

Runs in its own virtual environment (HealthChain's dependencies are not osteohooks'):

    python3 -m venv .bench-venv/healthchain
    .bench-venv/healthchain/bin/pip install healthchain uvicorn
    .bench-venv/healthchain/bin/python benchmarks/peers/healthchain_app.py --port 8091

Its hook is `POST /cds/cds-services/bmd-patient-view` (HealthChain mounts CDS Hooks under
`/cds`). The handler answers every patient-view call with one fixed card, as HealthChain's own
example does: the cost measured is HealthChain's request model, routing and response
model, the floor a CDS Hooks framework in Python pays before any clinical logic.
"""

from __future__ import annotations

import argparse

import uvicorn
from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.models import CDSRequest, CDSResponse


def build() -> HealthChainAPI:
    app = HealthChainAPI(enable_events=False, enable_cors=False)
    cds = CDSHooksService(use_events=False)

    @cds.hook("patient-view", id="bmd-patient-view")
    def patient_view(request: CDSRequest) -> CDSResponse:  # noqa: ARG001 (a trivial handler)
        return CDSResponse(
            cards=[
                {
                    "summary": "Bone density reviewed",
                    "indicator": "info",
                    "source": {"label": "peer"},
                }
            ]
        )

    app.register_service(cds)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
