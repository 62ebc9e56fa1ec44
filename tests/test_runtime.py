"""cds.runtime.settle_heap: the start-up heap frozen and the gen0 threshold raised, once
per process (in a child process: the test process's collector is left alone)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import gc, json, os
    from cds.runtime import GEN0_THRESHOLD, settle_heap
    before = gc.get_threshold()
    settle_heap()
    frozen = gc.get_freeze_count()
    after = gc.get_threshold()
    junk = [[] for _ in range(1000)]
    settle_heap()  # a second call in the same process: nothing more is frozen
    again = gc.get_freeze_count()
    del junk
    pid = os.fork()
    if pid == 0:  # a forked child settles again: what it made since is frozen too
        keep = [[] for _ in range(1000)]
        settle_heap()
        os._exit(0 if gc.get_freeze_count() >= frozen + 1000 else 1)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"before": before, "after": after, "frozen": frozen, "again": again,
                      "child": os.waitstatus_to_exitcode(status), "gen0": GEN0_THRESHOLD}))
    """
)


def test_settle_heap_freezes_and_sets_gen0_once_per_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(done.stdout)
    assert got["frozen"] > 0
    assert got["again"] == got["frozen"]
    assert got["child"] == 0
    assert got["after"] == [got["gen0"], *got["before"][1:]]
    assert got["gen0"] > got["before"][0]
