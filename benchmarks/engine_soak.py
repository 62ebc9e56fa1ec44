"""Differential soak: compiled durable_rules engine vs the reference evaluator.

    .venv/bin/python benchmarks/engine_soak.py --cases 1000000 [--seed 2026] [--workers 2]
        [--split]   # tiny split bounds: many durable rulesets per rule set, same answers

A case is one random fact set evaluated by both against one random rule set (the
generator of tests/engine/generate.py: all/any/not/in/exists/missing/params over the
real fact schema, forward chaining through derived facts). Each rule set serves
`--per-ruleset` fact sets on one Engine, as in production. Fixed seed: the same run
gives the same cases. Prints the number of mismatches (the goal is 0) and the time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cds.engine import Engine, SplitBounds  # noqa: E402
from cds.rules.compiler import compile_rules  # noqa: E402
from cds.rules.reference import evaluate  # noqa: E402
from tests.engine import generate  # noqa: E402


def run_block(args: tuple[int, int, int, int, bool]) -> tuple[int, int, int, int, list[str]]:
    """Rule sets [first, last) of the run: (cases, mismatches, firings, emitted, samples)."""
    seed, first, last, per_ruleset, tiny = args
    bounds = SplitBounds(results=2, exists=2, hashed=3) if tiny else None
    cases = mismatches = firings = emitted = 0
    samples: list[str] = []
    for index in range(first, last):
        chooser = generate.RandomChooser(random.Random(seed * 1_000_003 + index))
        rules = generate.ruleset(chooser)
        engine = Engine(
            compile_rules(rules, generate.PARAMETERS, generate.FACT_TYPES), bounds=bounds
        )
        try:
            for case in range(per_ruleset):
                facts = generate.facts(chooser)
                got = engine.evaluate(facts)
                want = evaluate(rules, generate.PARAMETERS, facts)
                cases += 1
                firings += len(want.firings)
                emitted += len(want.emitted)
                if got != want:
                    mismatches += 1
                    if len(samples) < 3:
                        samples.append(
                            f"rule set {index} case {case}: engine fired {got.fired}, "
                            f"reference fired {want.fired}"
                        )
        finally:
            engine.close()
    return cases, mismatches, firings, emitted, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--per-ruleset", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--split",
        action="store_true",
        help="tiny engine split bounds: every rule set spread over many durable rulesets",
    )
    args = parser.parse_args()

    rulesets = max(1, -(-args.cases // args.per_ruleset))
    block = max(1, min(50, rulesets // max(1, args.workers * 4)))
    jobs = []
    for first in range(0, rulesets, block):
        last = min(rulesets, first + block)
        jobs.append((args.seed, first, last, args.per_ruleset, args.split))

    start = time.perf_counter()
    totals = [0, 0, 0, 0]
    samples: list[str] = []
    report_every = max(1, len(jobs) // 20)
    with multiprocessing.Pool(args.workers) if args.workers > 1 else _Serial() as pool:
        for done, result in enumerate(pool.imap(run_block, jobs), start=1):
            for i in range(4):
                totals[i] += result[i]
            samples.extend(result[4][: 3 - len(samples)])
            if done % report_every == 0:
                elapsed = time.perf_counter() - start
                print(
                    f"  {totals[0]:>9} cases  {totals[1]} mismatches  {elapsed:7.1f} s",
                    flush=True,
                )
    elapsed = time.perf_counter() - start
    cases, mismatches, firings, emitted = totals
    print(
        f"soak: {cases} cases over {rulesets} rule sets (seed {args.seed}, "
        f"{args.workers} worker{'s' if args.workers != 1 else ''}, "
        f"split {'tiny' if args.split else 'production'})"
    )
    print(f"      {firings} firings, {emitted} emitted facts checked")
    print(f"      mismatches: {mismatches}")
    print(f"      time: {elapsed:.1f} s ({cases / elapsed:.0f} cases/s)")
    for sample in samples:
        print(f"      e.g. {sample}")
    sys.exit(1 if mismatches else 0)


class _Serial:
    """Pool stand-in for --workers 1 (no child processes)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn, jobs):  # type: ignore[no-untyped-def]
        return map(fn, jobs)


if __name__ == "__main__":
    main()
