"""tools/differential.py: the corpus is reproducible, dumps are deterministic, and a
difference is reported with the input and the first place where the results part."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("differential", ROOT / "tools/differential.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutation_is_seeded_and_leaves_the_original_alone() -> None:
    tool = _tool()
    original = {"resourceType": "Observation", "code": {"coding": [{"code": "1"}]}, "v": 2}
    kept = json.dumps(original)
    first = [tool.mutate(original, random.Random(5)) for _ in range(3)]
    assert json.dumps(original) == kept
    assert first[0] == first[1] == first[2]
    assert any(tool.mutate(original, random.Random(s)) != original for s in range(10))


def test_corpus_is_the_same_every_time() -> None:
    tool = _tool()
    assert list(tool.corpus(3)) == list(tool.corpus(3))
    names = [name for name, _ in tool.corpus(3)]
    assert names[:6] == ["bench0", "bench1", "bench2", "mutated0", "mutated1", "mutated2"]
    assert any(name.startswith("tests/fixtures/") for name in names)


def test_first_difference_names_the_path() -> None:
    tool = _tool()
    a = {"cards": [{"summary": "x", "uuid": "u"}], "n": 1}
    b = {"cards": [{"summary": "y", "uuid": "u"}], "n": 1}
    assert tool._first_difference(a, b) == ".cards[0].summary: 'x' here, 'y' at the base"
    assert tool._first_difference({"a": 1}, {}) == ".a: only here"
    assert tool._first_difference([1], [1, 2]) == ": 1 items here, 2 at the base"


def test_dump_is_deterministic_and_compare_reports_the_first_difference(tmp_path: Path) -> None:
    tool = _tool()
    inputs = tmp_path / "inputs.ndjson"
    with inputs.open("w", encoding="utf-8") as handle:
        for name, text in list(tool.corpus(2))[:4]:
            handle.write(json.dumps([name, text]) + "\n")
    outs = []
    for run in ("one", "two"):
        out = tmp_path / f"{run}.jsonl"
        subprocess.run(
            [sys.executable, str(ROOT / "tools/differential.py"), "--dump", str(inputs), str(out)],
            cwd=ROOT,
            check=True,
        )
        outs.append(out)
    assert tool.compare_dumps(outs[0], outs[1]) == (8, None)  # 4 inputs x 2 hooks
    lines = outs[1].read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    assert record["cards"], "a bench Bundle gives cards"
    record["cards"][0]["summary"] += "!"
    lines[2] = json.dumps(record, sort_keys=True)
    outs[1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert tool.report_dumps(outs[0], outs[1]) == (
        8,
        [
            "bench1 (patient-view): .cards[0].summary: "
            + repr(record["cards"][0]["summary"][:-1])
            + " here, "
            + repr(record["cards"][0]["summary"])
            + " at the base"
        ],
    )
    count, difference = tool.compare_dumps(outs[0], outs[1])
    assert count == 3
    assert difference is not None
    assert difference.startswith("DIFFERS at evaluation 3: bench1 (patient-view)")
    assert ".cards[0].summary" in difference
    whole = outs[0].read_text(encoding="utf-8").splitlines()
    outs[1].write_text("\n".join(whole[:7]) + "\n", encoding="utf-8")  # one evaluation less
    assert tool.compare_dumps(outs[0], outs[1]) == (
        7,
        "DIFFERS after evaluation 7: this tree made more evaluations",
    )
    assert tool.compare_dumps(outs[1], outs[0])[1] == (
        "DIFFERS after evaluation 7: the base made more evaluations"
    )


def _repo(tmp_path: Path) -> tuple[Path, Callable[..., str]]:
    """An empty git repository and a `git` runner for it (no user config needed)."""
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    return repo, git


def _commit(git: Callable[..., str], message: str) -> str:
    git("commit", "-q", "--allow-empty", "-m", message)
    return git("rev-parse", "HEAD")


def test_ci_compares_nothing_on_main_itself_or_without_main(tmp_path: Path) -> None:
    tool = _tool()
    repo, git = _repo(tmp_path)
    assert tool.ci_plan(repo).mode == "skip"  # no commit at all
    _commit(git, "first")
    plan = tool.ci_plan(repo)
    assert (plan.mode, plan.base) == ("skip", git("rev-parse", "HEAD"))
    assert "HEAD itself" in plan.message
    git("branch", "-q", "-m", "trunk")  # neither origin/main nor main
    plan = tool.ci_plan(repo)
    assert plan.mode == "skip"
    assert plan.base is None
    assert "origin/main, main" in plan.message


def test_ci_checks_a_branch_against_its_merge_base_with_origin_main(tmp_path: Path) -> None:
    tool = _tool()
    repo, git = _repo(tmp_path)
    start = _commit(git, "start")
    # a trailer before the merge base does not count
    fork = _commit(git, "on main\n\nChanges-output: an old clinical change")
    git("checkout", "-q", "-b", "work")
    _commit(git, "refactor one")
    _commit(git, "refactor two")
    git("checkout", "-q", "main")
    _commit(git, "main moves on")
    git("checkout", "-q", "work")
    plan = tool.ci_plan(repo)
    assert (plan.mode, plan.base, plan.declared) == ("check", fork, ())
    # origin/main comes first when it exists (CI's clone), whatever the local main is
    git("update-ref", "refs/remotes/origin/main", start)
    assert tool.ci_plan(repo).base == start
    # an explicit base (DIFFERENTIAL_BASE) replaces the merge base
    assert tool.ci_plan(repo, base="main~1").base == fork


def test_ci_reports_instead_of_failing_when_a_commit_declares_an_output_change(
    tmp_path: Path,
) -> None:
    tool = _tool()
    repo, git = _repo(tmp_path)
    fork = _commit(git, "start")
    git("checkout", "-q", "-b", "work")
    _commit(git, "refactor")
    declared = _commit(
        git,
        "rules: rescan at 3 years\n\nWhy it changes.\n\n"
        "Changes-output: the rescan interval follows CS-7.3 rev 3\nOther-trailer: x",
    )
    _commit(git, "docs")
    plan = tool.ci_plan(repo)
    assert (plan.mode, plan.base) == ("report", fork)
    assert plan.declared == (f"{declared[:7]}: the rescan interval follows CS-7.3 rev 3",)
    # the words in a message body are not a trailer
    repo2, git2 = _repo(tmp_path / "two")
    _commit(git2, "start")
    git2("checkout", "-q", "-b", "work")
    _commit(git2, "says Changes-output: in prose\n\nno Changes-output: here either, see")
    assert tool.ci_plan(repo2).mode == "check"


def test_run_ci_exit_status_follows_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool()
    compared: list[str] = []

    def fake_compare(base: str, bundles: int, *, report: bool) -> int:
        compared.append(f"{base} {'report' if report else 'check'}")
        return 1  # differences found

    monkeypatch.setattr(tool, "compare", fake_compare)
    for mode, status in (("skip", 0), ("check", 1), ("report", 0)):
        plan = tool.CiPlan(mode, None if mode == "skip" else "abc", "m", ("c1: why",))
        monkeypatch.setattr(tool, "ci_plan", lambda *a, _p=plan, **k: _p)
        assert tool.run_ci(10) == status
    assert compared == ["abc check", "abc report"]
