"""HTTP benchmark: the CDS Hooks service against a bare FastAPI floor, same run, loopback.

Starts four servers on 127.0.0.1, each in its own process (five with `--healthchain`):
- `service`: `cds serve` (bundled rules, OSTEOHOOKS_AUTH=none, SQLite audit in a temp dir);
- `service-2w`: the same with `--workers 2` (CPU counted over the parent and its workers);
- `http-only`: the same service app whose evaluator returns a precomputed result of the
  same request (the HTTP layer's own cost: validation, prefetch, card checks, audit);
- `bare`: a FastAPI app whose endpoint only parses the JSON body and answers {"cards": []};
- `healthchain` (with `--healthchain PYTHON`, the peer, `make bench-peers` makes its venv):
  HealthChain's trivial patient-view handler (benchmarks/peers/healthchain_app.py).
Then POSTs the same 20-resource patient-view request a fixed number of times with 1 and
with 16 concurrent keep-alive clients, and prints p50/p99 latency, requests/s, the server's
CPU time per request (user+system, all its threads and child processes) and its peak RSS
(VmHWM, the largest process). Targets (issue 5): p99 < 10 ms at 16 clients; service
throughput within 3x of the bare floor; (issue 12) CPU per request <= ~2.1 ms and, with
`--workers 2`, p99 < 25 ms at 16 clients.

    .venv/bin/python benchmarks/http_bench.py [--requests 500] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from starlette.responses import Response

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "tests" / "fixtures" / "stories" / "24-loss-on-alendronate.json"
AS_OF = "2026-11-23"
KEY_OF_TYPE = {
    "Patient": "patient",
    "Condition": "conditions",
    "Procedure": "procedures",
    "MedicationStatement": "medicationStatements",
    "MedicationRequest": "medicationRequests",
    "MedicationAdministration": "medicationAdministrations",
}
RESOURCES = 20


def request_body() -> dict[str, Any]:
    """A patient-view request with 20 resources: story 24 plus an older scan history."""
    story = json.loads(STORY.read_text())
    resources = [e["resource"] for e in story["entry"]]
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    years = 4
    while len(resources) < RESOURCES:
        for obs in observations:
            if len(resources) >= RESOURCES:
                break
            old = copy.deepcopy(obs)
            old["id"] = f"{obs['id']}-y{years}"
            when = old.get("effectiveDateTime")
            if isinstance(when, str) and len(when) >= 4:
                old["effectiveDateTime"] = f"{int(when[:4]) - years}{when[4:]}"
            resources.append(old)
        years += 2
    prefetch: dict[str, Any] = dict.fromkeys(KEY_OF_TYPE.values())
    prefetch["observations"] = None
    patient_id = ""
    for resource in resources:
        key = KEY_OF_TYPE.get(resource["resourceType"], "observations")
        if key == "patient":
            prefetch["patient"] = resource
            patient_id = resource["id"]
            continue
        bundle = prefetch[key] or {"resourceType": "Bundle", "type": "searchset", "entry": []}
        bundle["entry"].append({"resource": resource})
        prefetch[key] = bundle
    assert len(resources) == RESOURCES
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/bench", "patientId": patient_id},
        "prefetch": prefetch,
    }


def bare_app() -> Any:
    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def parse_only(service_id: str, request: Request) -> Response:  # noqa: ARG001 (the path parameter, as the service takes it)
        json.loads(await request.body())
        return Response(b'{"cards":[]}', media_type="application/json")

    return app


def http_only_app(db: str) -> Any:
    """The service with the pipeline replaced by its precomputed answer to the request."""
    from datetime import date

    from cds.api import create_app
    from cds.pipeline import EvaluationInput, Evaluator
    from cds.settings import Settings

    evaluator = Evaluator.from_rules_dir(ROOT / "rules")
    body = request_body()
    result = evaluator.evaluate(
        EvaluationInput(
            hook="patient-view",
            resources=[v for v in body["prefetch"].values() if v is not None],
            as_of=date.fromisoformat(AS_OF),
            patient_id=body["context"]["patientId"],
        )
    )

    class Precomputed:
        ruleset_version = evaluator.ruleset_version

        def evaluate(self, _data: Any) -> Any:
            return result

    settings = Settings(auth="none", database_url=f"sqlite:///{db}", log_level="WARNING")
    return create_app(settings, Precomputed())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's workers under `--workers`)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the server has used so far (all threads and workers)."""
    total = 0.0
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def peak_rss_mb(pid: int) -> float:
    peak = float("nan")
    for each in _tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) / 1024
                    peak = rss if peak != peak else max(peak, rss)
        except OSError:
            pass
    return peak


#: the peer's interpreter (`--healthchain`): a separate venv with HealthChain installed
PEER_PYTHON: str | None = None


def start(kind: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    prefix = ""
    if kind in ("service", "service-2w"):
        env.update(
            OSTEOHOOKS_AUTH="none",
            OSTEOHOOKS_DATABASE_URL=f"sqlite:///{tmp / (kind + '.db')}",
            OSTEOHOOKS_LOG_LEVEL="WARNING",
        )
        cds = Path(sys.executable).parent / "cds"
        args = [str(cds), "serve", "--host", "127.0.0.1", "--port", str(port), "--as-of", AS_OF]
        if kind == "service-2w":
            args += ["--workers", "2"]
    elif kind == "healthchain":
        assert PEER_PYTHON is not None
        peer = Path(__file__).resolve().parent / "peers" / "healthchain_app.py"
        args = [PEER_PYTHON, str(peer), "--port", str(port)]
        prefix = "/cds"  # HealthChain mounts CDS Hooks under /cds
    elif kind == "http-only":
        db = str(tmp / "http-only.db")
        args = [sys.executable, __file__, "--http-only-server", str(port), "--db", db]
    else:
        args = [sys.executable, __file__, "--bare-server", str(port)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}{prefix}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited with {proc.returncode}")
        try:
            httpx.post(f"{base}/cds-services/bmd-patient-view", content=b"{}", timeout=1)
            if kind in ("service", "service-2w"):
                _wait_ready(proc, base, deadline)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def _wait_ready(proc: subprocess.Popen[bytes], base: str, deadline: float) -> None:
    """Until /ready answers 200 five times running (each on a new connection, so both
    workers of service-2w are asked): the worker processes for big bodies start with the
    service, and their start-up CPU must not fall into the measured slices."""
    running = 0
    while running < 5:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"{base} did not become ready")
        ok = httpx.get(f"{base}/ready", timeout=2).status_code == 200
        running = running + 1 if ok else 0
        time.sleep(0.05 if ok else 0.2)


async def load(base: str, body: dict[str, Any], clients: int, total: int) -> dict[str, Any]:
    """`clients` keep-alive connections, each sending requests back to back until `total`
    are done. A minimal HTTP/1.1 client on asyncio streams: the load generator shares the
    machine with the server, so it must cost far less per request than the server does."""
    address, _, prefix = base.removeprefix("http://").partition("/")
    host, port = address.split(":")
    path = (
        f"/{prefix}/cds-services/bmd-patient-view" if prefix else "/cds-services/bmd-patient-view"
    )
    latencies: list[float] = []
    remaining = total
    requests = []
    for _ in range(64):
        payload = json.dumps(dict(body, hookInstance=str(uuid.uuid4()))).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        requests.append(head.encode() + payload)

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, int(port))
        i = 0
        try:
            while remaining > 0:
                remaining -= 1
                i += 1
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                await writer.drain()
                status, length = await _read_head(reader)
                content = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise SystemExit(f"HTTP {status}: {content[:300]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies}


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, length


def merge(parts: list[dict[str, Any]]) -> dict[str, float]:
    latencies = sorted(x for part in parts for x in part["latencies"])
    elapsed = sum(part["elapsed"] for part in parts)
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "rps": len(latencies) / elapsed,
        "cpu": sum(part.get("cpu", float("nan")) for part in parts) / len(latencies) * 1000,
    }


def _stack() -> str:
    """The event loop and HTTP parser uvicorn's "auto" picks in this interpreter."""
    names = []
    for module, fallback in (("uvloop", "asyncio"), ("httptools", "h11")):
        try:
            __import__(module)
            names.append(module)
        except ImportError:
            names.append(fallback)
    return " + ".join(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per server")
    parser.add_argument("--slices", type=int, default=5, help="interleaved slices per row")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-only-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument(
        "--healthchain",
        metavar="PYTHON",
        help="also run HealthChain's trivial handler (benchmarks/peers/healthchain_app.py) "
        "with this interpreter, e.g. .bench-venv/healthchain/bin/python (make bench-peers)",
    )
    args = parser.parse_args()
    global PEER_PYTHON
    PEER_PYTHON = args.healthchain
    if args.bare_server or args.http_only_server:
        import logging

        import uvicorn

        logging.disable(logging.WARNING)
        app = bare_app() if args.bare_server else http_only_app(args.db)
        port = args.bare_server or args.http_only_server
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        return

    body = request_body()
    size = len(json.dumps(body))
    rows: list[tuple[str, int, dict[str, float], float]] = []
    kinds: tuple[str, ...] = ("service", "service-2w", "http-only", "bare")
    if args.healthchain:
        kinds = (*kinds, "healthchain")
    with tempfile.TemporaryDirectory() as tmp:
        servers = {kind: start(kind, Path(tmp)) for kind in kinds}
        try:
            for _proc, base in servers.values():
                asyncio.run(load(base, body, 4, args.warmup))
            # the three servers are measured in turn, in slices, so that load from other
            # processes on the machine falls on all of them alike
            results: dict[tuple[str, int], list[dict[str, float]]] = {}
            slices = max(1, args.slices)
            for clients in (1, 16):
                for _ in range(slices):
                    for kind in kinds:
                        proc, base = servers[kind]
                        cpu = cpu_seconds(proc.pid)
                        part = asyncio.run(load(base, body, clients, args.requests // slices))
                        part["cpu"] = cpu_seconds(proc.pid) - cpu
                        results.setdefault((kind, clients), []).append(part)
            for clients in (1, 16):
                for kind in kinds:
                    rows.append(
                        (
                            kind,
                            clients,
                            merge(results[(kind, clients)]),
                            peak_rss_mb(servers[kind][0].pid),
                        )
                    )
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    print(
        f"POST /cds-services/bmd-patient-view, {RESOURCES} resources ({size / 1024:.1f} KiB), "
        f"{args.requests} requests per row, loopback, {os.cpu_count()} CPUs "
        "(service-2w: cds serve --workers 2; the others one uvicorn worker; "
        f"this interpreter's uvicorn runs on {_stack()})"
    )
    print(
        f"{'server':<10} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'CPU ms/req':>10} {'peak RSS MB':>12}"
    )
    for kind, clients, r, rss in rows:
        latency = f"{r['p50']:>8.2f} {r['p99']:>8.2f}"
        print(f"{kind:<10} {clients:>7} {latency} {r['rps']:>8.0f} {r['cpu']:>10.2f} {rss:>12.1f}")
    print(
        "CPU ms/req: the server process's user+system CPU per request (/proc, all threads, "
        "10 ms ticks: read it over 1000+ requests); steadier than req/s on a busy machine."
    )
    row = {(k, c): r for k, c, r, _ in rows}
    service16, bare16 = row[("service", 16)], row[("bare", 16)]
    ratio = bare16["rps"] / service16["rps"]
    http_ratio = bare16["rps"] / row[("http-only", 16)]["rps"]
    print(
        f"16 clients: service p99 {service16['p99']:.2f} ms (target < 10 ms: "
        f"{'met' if service16['p99'] < 10 else 'NOT met'}); bare/service throughput "
        f"{ratio:.2f}x (target <= 3x: {'met' if ratio <= 3 else 'NOT met'}); "
        f"bare/http-only {http_ratio:.2f}x"
    )
    if ("healthchain", 16) in row:
        for clients in (1, 16):
            peer = row[("healthchain", clients)]["rps"]
            mine = row[("service", clients)]["rps"]
            floor = row[("bare", clients)]["rps"]
            print(
                f"{clients} client{'s' if clients > 1 else ''}: service/HealthChain throughput "
                f"{mine / peer:.2f}x (target >= 1.0x: {'met' if mine >= peer else 'NOT met'}); "
                f"service/bare {mine / floor:.2f}x (target >= 0.5x: "
                f"{'met' if mine >= 0.5 * floor else 'NOT met'})"
            )
    two = row[("service-2w", 16)]
    cpu = row[("service", 1)]["cpu"]
    print(
        f"--workers 2, 16 clients: p99 {two['p99']:.2f} ms (target < 25 ms: "
        f"{'met' if two['p99'] < 25 else 'NOT met'}); service CPU {cpu:.2f} ms/request at "
        f"1 client (target <= 2.1 ms: {'met' if cpu <= 2.1 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
