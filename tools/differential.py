"""Prove a change behaviour-neutral: the same corpus through this tree and through a git revision.

    .venv/bin/python tools/differential.py --base main          # before merging a refactor
    .venv/bin/python tools/differential.py --base HEAD~3 --bundles 300

The corpus: `--bundles` generated 20-resource Bundles (benchmarks/replay_bench.py's
generator), as many again with junk written into 1-3 random places (any JSON type, deleted
keys, bad dates, huge numbers), and every JSON file under tests/fixtures with one mutation
of each; every input evaluated as patient-view and as order-sign, as of 2026-11-23, with
the input name as uuid seed. For each evaluation everything is compared: cards, the
OperationOutcome of data errors, the trace, the facts, the firings and the emitted facts
(or the evaluation error, or why the input could not be read).

The revision is exported with `git archive` into a temporary folder and evaluated in its
own process, so both sides run their own code on the same inputs. Prints IDENTICAL, or the
first input that differs and the first place in its result where it differs (exit 1).
This is how the speed work of issues 5 and 6 was checked after every change.

In CI (`.ci/run`) it runs as `tools/differential.py --ci`: against the merge base of HEAD
with origin/main (or main), when that differs from HEAD. A change that is meant to change
clinical output says so with a commit trailer on one of its commits since the merge base,

    Changes-output: the rescan interval now follows CS-7.3 rev 3

and the run is then a printed report of the differences, not a failure. On main itself
(the merge base is HEAD), or with no main to compare with, it says so and compares nothing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 11, 23)
HOOKS = ("patient-view", "order-sign")
JUNK: list[Any] = [
    None,
    "",
    "x",
    1,
    -1.5,
    0,
    [],
    {},
    True,
    "2026-13-45",
    "2026",
    "2026-02-30T10:00:00",
    {"value": "abc"},
    [{}],
    [None],
    "1e400",
    1e308,
    -0.0,
    "  ",
    "Patient/",
    {"reference": 5},
]


def mutate(document: Any, rng: random.Random) -> Any:
    """A copy of `document` with 1-3 random places replaced by junk or deleted."""
    document = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        node, path = document, []
        while True:
            if isinstance(node, dict) and node:
                key: Any = rng.choice(sorted(node))
            elif isinstance(node, list) and node:
                key = rng.randrange(len(node))
            else:
                break
            path.append((node, key))
            node = node[key]
            if rng.random() < 0.25:
                break
        if not path:
            continue
        parent, key = path[-1]
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[key]
        else:
            parent[key] = copy.deepcopy(rng.choice(JUNK))
    return document


def corpus(bundles: int) -> Iterator[tuple[str, str]]:
    """(name, JSON text) of every input, the same on both sides."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from replay_bench import make_bundle

    rng = random.Random(6)
    made = [make_bundle(i, rng) for i in range(bundles)]
    for i, bundle in enumerate(made):
        yield f"bench{i}", json.dumps(bundle)
    mutations = random.Random(11)
    for i in range(bundles):
        yield f"mutated{i}", json.dumps(mutate(made[i % max(1, bundles // 5)], mutations))
    for path in sorted((ROOT / "tests" / "fixtures").rglob("*.json")):
        try:
            text = path.read_text(encoding="utf-8")
            document = json.loads(text)
        except (OSError, ValueError):
            continue
        name = str(path.relative_to(ROOT))
        yield name, text
        if isinstance(document, dict):
            yield name + "+mutated", json.dumps(mutate(document, mutations))


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def dump(inputs: Path, out: Path) -> None:
    """Evaluate every input of `inputs` (NDJSON of [name, text]) with the `cds` on sys.path.

    This runs on the base revision's code too, so it uses only long-standing APIs
    (`read_source`, `Job.to_input` or, before it, `EvaluationInput`,
    `Evaluator.evaluate`), not newer helpers.
    """
    import cds
    from cds.pipeline import Evaluator
    from cds.replay.inputs import Source
    from cds.replay.reader import read_source

    if not Path(cds.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise SystemExit(f"imported {cds.__file__}, not the cds of {Path.cwd()}")
    evaluator = Evaluator.from_rules_dir(Path.cwd() / "rules")
    with inputs.open(encoding="utf-8") as source, out.open("w", encoding="utf-8") as sink:
        for line in source:
            name, text = json.loads(line)
            for hook in HOOKS:
                for item in read_source(Source(name=name, key=name, text=text), hook):
                    record = {"name": name, "hook": hook, **_evaluated(evaluator, item)}
                    sink.write(json.dumps(record, default=_default, sort_keys=True) + "\n")


def _evaluated(evaluator: Any, item: Any) -> dict[str, Any]:
    """What one read item gave: why it is unreadable, the evaluation error, or the result."""
    from cds.pipeline import EvaluationError, EvaluationInput
    from cds.replay.reader import Job

    if not isinstance(item, Job):
        return {"unreadable": item.outcome}
    if hasattr(item, "to_input"):  # the job's own mapping (and all it carries)
        inp = item.to_input(AS_OF)
    else:  # revisions before Job.to_input
        inp = EvaluationInput(
            hook=item.hook,
            resources=item.resources,
            as_of=AS_OF,
            patient_id=item.patient_id,
            draft_orders=item.draft_orders,
            selections=item.selections,
            uuid_seed=item.name,
        )
    try:
        result = evaluator.evaluate(inp)
    except EvaluationError as exc:
        return {"name": item.name, "error": str(exc)}
    return {
        "name": item.name,
        # as written: a `Card` model's dump, or the dicts of revisions before it
        "cards": [card.dump() if hasattr(card, "dump") else card for card in result.cards],
        "outcome": result.outcome,
        "trace": result.trace,
        "fired": result.fired,
        "facts": result.facts,
        "firings": result.firings,
        "emitted": result.emitted,
    }


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if type(a) is not type(b):
        return f"{path or '.'}: {type(a).__name__} here, {type(b).__name__} at the base"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}: only {'here' if key in a else 'at the base'}"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}.{key}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items here, {len(b)} at the base"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{index}]")
    return f"{path or '.'}: {a!r} here, {b!r} at the base"


def _run_dump(tree: Path, inputs: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--dump", str(inputs), str(out)],
        cwd=tree,
        env=env,
        check=True,
    )


def compare(base: str, bundles: int, *, report: bool = False) -> int:
    """1 when an evaluation differs (the first printed; with `report`, every one counted
    and the first `REPORT_MOST` printed), else 0 after printing IDENTICAL."""
    with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
        work = Path(tmp)
        base_tree = work / "base"
        base_tree.mkdir()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", base], cwd=ROOT, check=True, capture_output=True
        ).stdout
        (work / "base.tar").write_bytes(archive)
        with tarfile.open(work / "base.tar") as tar:
            tar.extractall(base_tree, filter="data")
        inputs = work / "inputs.ndjson"
        with inputs.open("w", encoding="utf-8") as handle:
            for name, text in corpus(bundles):
                handle.write(json.dumps([name, text]) + "\n")
        _run_dump(ROOT, inputs, work / "here.jsonl")
        _run_dump(base_tree, inputs, work / "base.jsonl")
        if report:
            count, lines = report_dumps(work / "here.jsonl", work / "base.jsonl")
            if lines:
                print(f"{len(lines)} of {count} evaluations differ from {base}:")
                print("\n".join(lines[:REPORT_MOST]))
                if len(lines) > REPORT_MOST:
                    print(f"... and {len(lines) - REPORT_MOST} more")
                return 1
        count, difference = compare_dumps(work / "here.jsonl", work / "base.jsonl")
        if difference is not None:
            print(difference)
            return 1
        print(f"IDENTICAL: {count} evaluations, this tree and {base}")
        return 0


def compare_dumps(here: Path, base: Path) -> tuple[int, str | None]:
    """(evaluations compared, None or where the first one differs)."""
    count = 0
    with here.open(encoding="utf-8") as mine, base.open(encoding="utf-8") as theirs:
        for line_here, line_base in itertools.zip_longest(mine, theirs):
            if line_here is None or line_base is None:
                more = "this tree" if line_base is None else "the base"
                return count, f"DIFFERS after evaluation {count}: {more} made more evaluations"
            count += 1
            if line_here != line_base:
                a, b = json.loads(line_here), json.loads(line_base)
                return count, (
                    f"DIFFERS at evaluation {count}: {a.get('name')} ({a.get('hook')})\n"
                    f"  {_first_difference(a, b)}"
                )
    return count, None


#: Differing evaluations a report prints (it counts them all).
REPORT_MOST = 20


def report_dumps(here: Path, base: Path) -> tuple[int, list[str]]:
    """(evaluations here, one line per evaluation that differs: name, hook, first place)."""
    with here.open(encoding="utf-8") as mine, base.open(encoding="utf-8") as theirs:
        pairs = list(itertools.zip_longest(mine, theirs))
    lines: list[str] = []
    for index, (line_here, line_base) in enumerate(pairs, 1):
        if line_here is None or line_base is None:
            more = "this tree" if line_base is None else "the base"
            lines.append(f"evaluation {index} and after: only {more} made them")
            break
        if line_here != line_base:
            a, b = json.loads(line_here), json.loads(line_base)
            lines.append(f"{a.get('name')} ({a.get('hook')}): {_first_difference(a, b)}")
    return sum(1 for pair in pairs if pair[0] is not None), lines


#: The commit trailer that declares a change of clinical output (its value says why).
TRAILER = "Changes-output"
#: Where CI looks for the branch a change is merged into, first found first.
UPSTREAMS = ("origin/main", "main")


class CiPlan(NamedTuple):
    """What the CI run does: `skip` (why in `message`), `check` (IDENTICAL or fail) or
    `report` (differences printed, not a failure: `declared` says why, per commit)."""

    mode: str
    base: str | None
    message: str
    declared: tuple[str, ...] = ()


def _git(root: Path, *args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ci_plan(
    root: Path = ROOT, upstreams: Sequence[str] = UPSTREAMS, base: str | None = None
) -> CiPlan:
    """The CI decision for the checkout at `root`: compare with `base` (default the merge
    base of HEAD with the first of `upstreams` that exists), unless that is HEAD itself;
    a `Changes-output:` trailer on a commit since the base turns the check into a report."""
    head = _git(root, "rev-parse", "--verify", "HEAD^{commit}")
    if head is None:
        return CiPlan("skip", None, "differential: no HEAD commit, nothing to compare")
    if base is None:
        upstream = next(
            (u for u in upstreams if _git(root, "rev-parse", "--verify", f"{u}^{{commit}}")),
            None,
        )
        if upstream is None:
            return CiPlan(
                "skip",
                None,
                f"differential: none of {', '.join(upstreams)} exists, nothing to compare "
                "(fetch origin/main, or set DIFFERENTIAL_BASE)",
            )
        base = _git(root, "merge-base", "HEAD", upstream)
        if base is None:
            return CiPlan("skip", None, f"differential: HEAD and {upstream} share no commit")
    resolved = _git(root, "rev-parse", "--verify", f"{base}^{{commit}}")
    if resolved is None:
        return CiPlan("skip", None, f"differential: {base} is not a commit here")
    if resolved == head:
        return CiPlan(
            "skip",
            resolved,
            f"differential: the base {resolved[:12]} is HEAD itself, nothing to compare",
        )
    log = _git(
        root,
        "log",
        f"--format=%h%x1f%(trailers:key={TRAILER},valueonly,unfold,separator=%x1e)",
        f"{resolved}..HEAD",
    )
    declared = tuple(
        f"{commit}: {why.strip()}"
        for line in (log or "").splitlines()
        for commit, _, values in [line.partition("\x1f")]
        for why in values.split("\x1e")
        if why.strip()
    )
    if declared:
        return CiPlan(
            "report",
            resolved,
            f"differential: {len(declared)} {TRAILER} trailer(s) since {resolved[:12]}: "
            "the differences are a report, not a failure",
            declared,
        )
    return CiPlan(
        "check",
        resolved,
        f"differential: against the merge base {resolved[:12]} (no {TRAILER} trailer since: "
        "the output must be IDENTICAL)",
    )


def run_ci(bundles: int, base: str | None = None) -> int:
    """`--ci`: the plan's run; its exit status (0 for skip and report)."""
    plan = ci_plan(ROOT, base=base)
    print(plan.message)
    for line in plan.declared:
        print(f"  {line}")
    if plan.base is None or plan.mode == "skip":
        return 0
    status = compare(plan.base, bundles, report=plan.mode == "report")
    if plan.mode == "report":
        print(
            "differential: output changes declared, so this is a report"
            + (" (IDENTICAL all the same)" if status == 0 else "")
        )
        return 0
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--base", help="git revision to compare with (default HEAD; with --ci the merge base)"
    )
    parser.add_argument("--bundles", type=int, default=1500, help="generated Bundles")
    parser.add_argument(
        "--ci",
        action="store_true",
        help=f"CI: against the merge base with {' or '.join(UPSTREAMS)} (or --base when "
        f"given), a report instead of a failure when a commit since has a {TRAILER}: trailer",
    )
    parser.add_argument("--dump", nargs=2, metavar=("INPUTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        dump(Path(args.dump[0]), Path(args.dump[1]))
        return
    if args.ci:
        raise SystemExit(run_ci(args.bundles, args.base))
    raise SystemExit(compare(args.base or "HEAD", args.bundles))


if __name__ == "__main__":
    main()
