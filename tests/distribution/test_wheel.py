"""The wheel works on its own: built, installed into a fresh virtual environment outside
the checkout, `cds serve` from there answers a story with cards from the bundled rules and
fhir_profiles (the package data) — no OSTEOHOOKS_RULES, no OSTEOHOOKS_FHIR_PROFILES.

The fresh environment gets only the wheel (`pip install --no-deps`); its dependencies are
those of the checkout's environment, reached through a `.pth` line, so the test needs no
network and no index. `cds` itself must come from the fresh environment (asserted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.api.fhir_server import free_port
from tests.api.test_end_to_end import AS_OF, STORIES, as_request

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSTEOHOOKS_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        env=_clean_env(),
        cwd=out,
    )
    (wheel,) = out.glob("osteohooks-*.whl")
    return wheel


def _fresh_venv(folder: Path, wheel: Path) -> Path:
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The checkout's dependencies (not its cds: that is an editable finder, not on the path).
    (Path(site) / "checkout-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run(
        [*pip, "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=_clean_env(),
    )
    return folder


@pytest.mark.subprocess
def test_the_wheel_serves_cards_from_a_fresh_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _build_wheel(wheels)
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("rules", "fhir_profiles"):
        shipped = {Path(n).name for n in names if n.startswith(f"cds/_data/{folder}/")}
        assert shipped == {
            p.name for p in (ROOT / folder).iterdir() if p.suffix in {".yaml", ".json"}
        }

    env_dir = _fresh_venv(tmp_path / "venv", wheel)
    run = tmp_path / "run"
    run.mkdir()
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import cds._data as d; print(d.BUNDLED_RULES)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=run,
        env=_clean_env(),
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    serve = [str(env_dir / "bin" / "cds"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*serve, "--as-of", AS_OF],
        cwd=run,
        env=_clean_env(OSTEOHOOKS_AUTH="none"),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/cds-services", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        story = json.loads((STORIES / "03-t-boundary-minus-2-5.json").read_text())
        answer = httpx.post(
            f"{base}/cds-services/bmd-patient-view", json=as_request(story), timeout=30
        )
        assert answer.status_code == 200, answer.text
        cards = answer.json()["cards"]
        assert cards
        topics = {card["source"]["topic"]["code"] for card in cards}
        assert "bmd-classification" in topics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
