"""Process-wide runtime settings, applied once where a process that serves requests or
evaluates inputs has finished starting: `cds serve` (its lifespan startup) and replay's
workers (`cds.replay.worker.init_worker`: the local pool's and the Dask plugin's).

The garbage collector: an evaluation allocates many small containers (the validated
FHIR models, trace entries, records, facts) that live until it ends and are then freed by
reference counting, almost never in a cycle. With CPython's default gen0 threshold (700)
every 700 net allocations start a collection that walks every young object still alive,
and what survives is walked again in gen1 and in full collections, which also walk the
whole start-up heap unless it is frozen: with neither setting ~17,000 instructions per
resource of a 1,000-resource read (benchmarks/fhir_read_bench.py, ~14% of it), most of
it the start-up heap; with the freeze only, the cost moves by ~8,000 per resource with
where full collections fall. `settle_heap` (once per process) collects, moves every surviving
object (imports, the compiled rule set, the profiles) to the permanent generation
(`gc.freeze`: full collections no longer walk it, ~130k long-lived objects that took
~80 ms a full collection, a pause for every call in flight; forked workers do not write
to their pages), and raises the gen0 threshold to GEN0_THRESHOLD, so a collection runs per
~50,000 net allocations instead of per 700. Cycles are still collected; the collector is
never turned off or toggled per call. See docs/architecture.md, "FHIR read per resource".
"""

from __future__ import annotations

import gc
import os

#: net container allocations between gen0 collections (CPython's default: 700): more than
#: a 1,000-resource read makes, so most of what a call allocates is freed by reference
#: counting before a collection would walk it; a collection then walks at most this many
#: young objects (a few MB)
GEN0_THRESHOLD = 50_000

_settled_in: int | None = None


def settle_heap() -> None:
    """Once per process (a forked child settles again): collect, freeze what survived
    start-up, and set the gen0 threshold (gen1 and gen2 thresholds unchanged)."""
    global _settled_in
    pid = os.getpid()
    if _settled_in == pid:
        return
    _settled_in = pid
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
