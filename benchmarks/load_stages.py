"""CPU time of a rule-set load and engine creation, stage by stage (for scale_bench.py).

`StageClock.install()` wraps the functions each stage runs (module attributes, so the
load itself is unchanged) and books each call's CPU time (`time.process_time`) to its
stage, less the time of wrapped calls inside it (a template compiled while a rule is
checked is template time, not validation time) and less the garbage collector's
collections during it, which are booked apart (`gc_s`, from `gc.callbacks`): a full
collection walks everything loaded so far, wherever it happens to start, so booked to
the stage it interrupts it would make a small stage look superlinear, and a collector
that runs too often (what made the load quadratic before issue 15) shows in its own
columns: its CPU time and `gc_walked`, the objects in the collector's generations at
the start of each full collection (what it walks: exact and repeatable). The collector
(CPython 3.11) runs a full collection after every ten middle-generation ones while the
objects promoted since the last one exceed a quarter of the old generation: that holds
at every tenth while the heap is small (under ~300,000 objects here, ~1,500 rules), so
up to there its work grows faster than linear whatever the load does, and beyond it
full collections come at heap sizes ~1.25x apart (linear). Before issue 15 each file's
node tree kept that condition true at any size (walked objects n^1.33 up to 5,000
rules; now n^1.07 from 2,000 to 5,000). So the growth check judges the stages, the whole
load (collections included) and the walked objects only between rule counts whose heap
after the load is past `GC_GEOMETRIC_HEAP`. A wrapped
name that no longer exists fails the benchmark, so a renamed stage cannot silently drop
out of the table.

Stages: parse (YAML read), structure (the rule file model), validate (the checks of
meaning: rules, evidence), templates (compiling card templates, wherever it happens),
derived (the derived-fact graph: declarations and the emit-cycle check), compile (the
durable form), other (the rest of `load_ruleset`: listing, origins, the version hash);
engine: create (durable's `create_ruleset`, one call per chunk of the split) and the
rest of the Evaluator's creation (the split, copies of the rules, the card renderer).
"""

from __future__ import annotations

import gc
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

LOAD_STAGES = ("parse", "structure", "validate", "templates", "derived", "compile")
#: Growth exponents above this between two rule counts are flagged (linear is 1; the
#: CPU time of a stage on this shared machine varies by ~15%, ~0.15 in the exponent
#: between 2,000 and 5,000 rules).
SUPERLINEAR = 1.25
#: Stages under this many CPU seconds at the larger count are not judged (noise).
MIN_JUDGED_S = 0.2
#: Tracked objects past which CPython 3.11's full collections come at heap sizes ~1.25x
#: apart (4 x 10 middle-generation collections of at most ~7,000 objects each).
GC_GEOMETRIC_HEAP = 300_000


class StageClock:
    """CPU seconds per stage of everything run while installed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(LOAD_STAGES, 0.0)
        self.chunk_create_s: list[float] = []
        #: CPU seconds of every collection while installed
        self.gc_s = 0.0
        #: objects walked by full collections while installed
        self.gc_walked = 0
        self._inner: list[float] = []
        self._gc_start = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.process_time()  # the count below is booked to gc too
            if info["generation"] == 2:
                self.gc_walked += sum(len(gc.get_objects(g)) for g in range(3))
        else:
            self.gc_s += time.process_time() - self._gc_start

    def _cpu(self) -> float:
        """CPU seconds so far, less the collector's."""
        return time.process_time() - self.gc_s

    def _wrap(self, owner: Any, name: str, stage: str | None) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self._cpu()
            self._inner.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = self._cpu() - start
                inner = self._inner.pop()
                if stage is None:
                    self.chunk_create_s.append(elapsed - inner)
                else:
                    self.seconds[stage] += elapsed - inner
                if self._inner:
                    self._inner[-1] += elapsed

        setattr(owner, name, timed)

    def install(self) -> None:
        import durable_rules_engine  # type: ignore[import-not-found]

        import cds.rules.compiler
        import cds.rules.ruleset
        import cds.rules.templates

        ruleset = cds.rules.ruleset
        for owner, name, stage in (
            (ruleset, "read_yaml", "parse"),
            (ruleset, "validate_structure", "structure"),
            (ruleset, "check_rule", "validate"),
            (ruleset, "check_evidence", "validate"),
            (cds.rules.templates.TemplateCache, "get", "templates"),
            (ruleset, "_precompile_templates", "templates"),
            (ruleset, "build_derived", "derived"),
            (ruleset, "check_emit_cycles", "derived"),
            (cds.rules.compiler, "compile_ruleset", "compile"),
        ):
            self._wrap(owner, name, stage)
        self._wrap(durable_rules_engine, "create_ruleset", None)
        gc.callbacks.append(self._on_gc)


def exponent(n1: float, t1: float, n2: float, t2: float) -> float:
    """k of t ~ n**k between (n1, t1) and (n2, t2)."""
    return math.log(t2 / t1) / math.log(n2 / n1)


def growth_check(rows: Sequence[dict[str, Any]], stages: Sequence[str]) -> list[str]:
    """Lines naming every stage that grows faster than linear between consecutive rule
    counts (`rows`: "rules" and one CPU seconds value per stage name); none: linear."""
    flagged: list[str] = []
    for low, high in itertools.pairwise(rows):
        for stage in stages:
            t1, t2 = low[stage], high[stage]
            if t2 < MIN_JUDGED_S or t1 <= 0:
                continue
            k = exponent(low["rules"], t1, high["rules"], t2)
            if k > SUPERLINEAR:
                flagged.append(
                    f"SUPERLINEAR: {stage} grows as n^{k:.2f} from {low['rules']:,} to "
                    f"{high['rules']:,} rules ({t1:.3g} -> {t2:.3g})"
                )
    return flagged
