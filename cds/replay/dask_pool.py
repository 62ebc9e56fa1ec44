"""`cds replay --engine dask`: the replay pool's contract on a `dask.distributed` cluster.

`DaskPool.run(sources)` yields what `cds.replay.pool.ReplayPool.run` yields, in the same
order, with the same promise: every input gets exactly one result.

- Same evaluation: each task runs `cds.replay.worker.read_items` and `process_item` on a
  batch of sources, in a worker process whose Evaluator was built once, by a
  `WorkerPlugin` calling `cds.replay.worker.init_worker` (also on every worker that
  joins later, such as one a nanny started in place of a dead one).
- Ordered and bounded: sources are pulled lazily; at most `window` sources are in flight
  or waiting to be written; results come out in input order.
- Without `scheduler`: a `LocalCluster` on loopback of `workers` nanny-supervised worker
  processes, one thread each (durable_rules is serialised per process), no dashboard.
  It is configured so that a worker holds one task at a time (`worker-saturation` 1.0)
  and a task on a worker that dies fails at once with `KilledWorker`
  (`allowed-failures` 0): the retries below are then counted exactly.
- Never loses an input: when a worker dies (its nanny starts a new one), the task it
  held fails with `KilledWorker`. A batch of several sources is split into one task per
  source, and a source of several inputs (a Bundle of several Patients) into one task
  per input, each tried again; an input tried `max_tries` times in all is reported with
  `cds.replay.pool.crash_result`. The deadline is per input, as on the local pool: a
  task notes on its worker which unit it is on and since when its current input runs
  (`cds.replay.dask_watch`, polled about once a second by `tick`, also while an export
  is grouped on the cluster); an input running longer than `deadline` seconds has its
  worker killed and is charged an overrun, alone: the other units of its task go again
  uncharged. An input that overruns each time ends as
  `cds.replay.pool.hung_result`. (A worker too stuck to answer, in native code holding
  the GIL, is judged from its last answer.) A batch is split as soon as
  it fails once, so at most one death is charged to an input that was only batched with
  the culprit.

On an existing cluster (`scheduler`) its own settings apply: a scheduler with the
default `allowed-failures` (3) retries a task itself before it fails (each failure then
counts as that many deaths), and one that gives a worker more than one task at a time
can charge a death to a task that was only waiting on that worker. The workers need
osteohooks installed and the rules folder at the same path; a worker whose rule-set
version differs from this process's stops the run before any input is evaluated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client, Future, LocalCluster, WorkerPlugin
from distributed.core import Status
from distributed.scheduler import KilledWorker

from cds.replay import dask_watch, worker
from cds.replay.dask_export import Grouping, dask_export_sources
from cds.replay.dask_watch import Tracked, Watch, Watched
from cds.replay.pool import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_TRIES,
    EngineError,
    crash_result,
    hung_result,
)
from cds.replay.worker import InputResult, WorkerSettings

if TYPE_CHECKING:
    from cds.pipeline import Evaluator
    from cds.replay.inputs import Source

#: Sources per task: enough that the scheduler's per-task cost and the worker's wait
#: for its next task (one task at a time per worker) stay small against the evaluation.
DEFAULT_BATCH = 128
#: Partitions of an export's patients per worker thread (`cds.replay.dask_export`).
PARTITIONS_PER_THREAD = 2
#: Seconds to try reaching the scheduler given by --scheduler.
CONNECT_TIMEOUT = 30.0
#: Seconds to wait for the results of finished tasks (they are on the workers already).
GATHER_TIMEOUT = 5.0
#: Messages Dask keeps per connection for debugging (default 1000). A message that
#: hands a task to a worker holds its sources (128 Bundles, about a megabyte), so with
#: the default the scheduler kept ~1000 of them per worker and the client as many of its
#: own (the replay process grew past 1 GB by 100,000 patients); a few are kept instead.
#: Set for the whole run (the client, and the streams to workers a nanny restarts).
#: And a LocalCluster closes the nanny of a worker that left unless a worker of its name
#: joins within `lost-worker-timeout` (default 15 s): on a busy machine a nanny that
#: restarts its worker (importing osteohooks, loading the rules) can take longer, and
#: closing it then killed the new worker with the task it had just been given (an
#: innocent input charged a death). Replay replaces a nanny that gave up itself
#: (`restore_workers`).
RUN_CONFIG: dict[str, Any] = {
    "distributed.admin.low-level-log-length": 16,
    "distributed.deploy.lost-worker-timeout": "1 hour",
}
#: The scheduler settings of the LocalCluster (see the module docstring).
LOCAL_CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
    **RUN_CONFIG,
}

#: (source sequence number, index of the input within the source or None for all).
Unit = tuple[int, int | None]


class DaskSetupError(EngineError):
    """The cluster cannot run this replay (unreachable, wrong rule set); says how to fix."""


def start_local_cluster(workers: int) -> LocalCluster:
    """A LocalCluster for replay: `workers` nanny-supervised processes of one thread each,
    on loopback only, no dashboard, set up for exact retry counting (module docstring)."""
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # The scheduler's HTTP routes (health, metrics) on a free loopback port,
            # without the dashboard: nothing listens beyond 127.0.0.1.
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            scheduler_port=0,
            silence_logs=40,  # logging.ERROR: a killed worker is reported by the run
        )


#: The states of a nanny that has given up (it never starts a worker again).
GAVE_UP = (Status.closing, Status.closed, Status.failed)


def restore_workers(cluster: LocalCluster) -> None:
    """Replace the nannies of `cluster` that gave up: a nanny whose new worker process
    was killed while it started closes itself. A nanny still starting its new worker (on
    a busy machine that takes seconds) is left alone: closing it would kill a worker
    that may have a task already, and charge that task a death it did not cause."""
    gone = [name for name, nanny in cluster.workers.items() if nanny.status in GAVE_UP]
    for name in gone:
        nanny = cluster.workers.pop(name)
        with contextlib.suppress(Exception):
            cluster.sync(nanny.close, timeout=5)
    if set(cluster.worker_spec) - set(cluster.workers):  # also a nanny the cluster closed
        with contextlib.suppress(Exception):
            cluster.sync(cluster._correct_state)


class ReplayPlugin(WorkerPlugin):
    """Builds the worker process's Evaluator once, when the worker starts."""

    #: A cluster reused by several runs keeps the Evaluators it built.
    idempotent = True

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        # One plugin per settings: a cluster shared by runs of other settings keeps each.
        digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
        self.name = f"osteohooks-replay-{digest}"

    def setup(self, worker: Any) -> None:  # noqa: ARG002 (dask passes worker= by name)
        from cds.replay import worker as replay_worker

        replay_worker.ensure_worker(self.settings)


def evaluate_units(
    settings: WorkerSettings, units: list[tuple[Source, int | None]], key: str = ""
) -> list[list[InputResult]]:
    """A task: the results of each (source, index) unit, exactly as the local pool's
    workers make them (index None: every input of the source). It notes the unit it is
    on before each input (`cds.replay.dask_watch.note`): the deadline runs per input."""
    worker.ensure_worker(settings)  # a no-op but on a worker that other runs set up
    out: list[list[InputResult]] = []
    with dask_watch.running(key):
        for number, (source, index) in enumerate(units):
            dask_watch.note(key, number)
            items = worker.read_items(source)
            if index is not None:
                items = items[index : index + 1]
            results: list[InputResult] = []
            for item in items:
                if results:
                    dask_watch.note(key, number)
                results.append(worker.process_item(item))
            out.append(results)
    return out


def ruleset_version() -> str | None:
    """On a worker: the rule-set version of its Evaluator (None before the plugin ran)."""
    return worker.ruleset_version()


@dataclass
class _Slot:
    """One source in flight: the results of its units and the units still out."""

    source: Source
    parts: dict[int | None, list[InputResult]] = field(default_factory=dict)
    pending: set[int | None] = field(default_factory=lambda: {None})

    @property
    def done(self) -> bool:
        return not self.pending

    def results(self) -> list[InputResult]:
        if None in self.parts:
            return self.parts[None]
        return [
            r for index in sorted(i for i in self.parts if i is not None) for r in self.parts[index]
        ]


@dataclass(kw_only=True)
class _Task(Tracked):
    """An evaluation task (`unit` of `Tracked`: the index in `units` it was last on)."""

    units: list[Unit]
    future: Future[list[list[InputResult]]]


@dataclass
class _RunState:
    """What the scheduling loop of one run works on (also between two grouping waits)."""

    done: queue.SimpleQueue[Future[Any]]
    slots: dict[int, _Slot]
    tasks: dict[str, _Task]
    submit: Callable[[list[Unit]], None]


class DaskPool:
    """Evaluate sources on a Dask cluster, yielding results in input order."""

    def __init__(
        self,
        settings: WorkerSettings,
        workers: int,
        *,
        scheduler: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        window: int | None = None,
        evaluator: Evaluator | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_tries: int = DEFAULT_MAX_TRIES,
        cluster: LocalCluster | None = None,
        scratch: str | None = None,
    ) -> None:
        self.settings = settings
        #: Where an export's grouping keeps its temporary files (None: TMPDIR).
        self.scratch = scratch
        self.workers = max(1, workers)
        self.scheduler = scheduler
        self.batch_size = max(1, batch_size)
        self.window = window
        self.evaluator = evaluator
        self.deadline = deadline
        self.max_tries = max(1, max_tries)
        self._client: Client | None = None
        #: The LocalCluster replay watches over (its own, or one given to share).
        self._cluster: LocalCluster | None = cluster
        self._own_cluster = cluster is None
        #: The deadline of every task of the run, evaluation and grouping alike.
        self._watch = Watch(deadline)
        self._state: _RunState | None = None
        self._poll = min(1.0, deadline / 5)
        self._last_poll = 0.0
        self._tries: dict[Unit, int] = {}
        self._timeouts: dict[Unit, int] = {}
        self._run_id = uuid.uuid4().hex[:8]
        self._count = 0

    @property
    def restarts(self) -> int:
        """Worker processes that died (or were stopped for overrunning) during the run."""
        return self._watch.restarts

    # -------------------------------------------------------------- the cluster

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests that kill them)."""
        if self._client is None:
            return []
        pids: dict[str, int] = self._client.run(os.getpid, on_error="ignore")
        return list(pids.values())

    def _connect(self) -> Client:
        if self._client is not None:
            return self._client
        if self.scheduler is not None:
            try:
                self._client = Client(self.scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise DaskSetupError(
                    f"cannot reach the Dask scheduler at {self.scheduler}: {exc}. Start one "
                    "with `dask scheduler` and workers with `dask worker "
                    f"{self.scheduler} --nthreads 1`, or leave out --scheduler to start a "
                    "local cluster"
                ) from None
            return self._client
        if self._cluster is None:
            self._cluster = start_local_cluster(self.workers)
        self._client = Client(self._cluster, direct_to_workers=True)
        return self._client

    def _prepare(self, client: Client) -> None:
        """Install the plugin (every worker builds its Evaluator) and check the rule set.

        A worker that dies meanwhile (its connection closes: CommClosedError, an OSError)
        neither stops the run nor is checked: the scheduler keeps the plugin, so the new
        worker its nanny starts builds its Evaluator when it joins, and the other workers
        get it all the same."""
        with contextlib.suppress(OSError):
            client.register_plugin(ReplayPlugin(self.settings))
        if self.scheduler is not None:
            client.wait_for_workers(1, timeout=60)
        want = worker.ruleset_version()
        answers: dict[str, Any] = client.run(ruleset_version, on_error="return")
        wrong = {addr: v for addr, v in answers.items() if v != want and not isinstance(v, OSError)}
        if wrong:
            raise DaskSetupError(
                f"Dask workers {sorted(wrong)} evaluate rule set "
                f"{sorted(set(map(str, wrong.values())))}, "
                f"not {want} (the rules in {self.settings.rules_dir} here): install the same "
                "osteohooks and give --rules a folder the workers see at the same path"
            )

    def _close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self._cluster is not None and self._own_cluster:
            with contextlib.suppress(Exception):
                self._cluster.close()
            self._cluster = None

    def group_export(self, folder: str, key: str | None = None) -> Iterator[Source]:
        """An export's inputs, grouped by tasks on the cluster (`cds.replay.dask_export`):
        discovery calls it while `run` pulls sources, so the cluster is up."""
        if self._client is None:
            raise RuntimeError("DaskPool.group_export is for the sources of DaskPool.run")
        threads = sum(self._client.nthreads().values()) or self.workers
        grouping = Grouping(
            partitions=PARTITIONS_PER_THREAD * threads,
            tries=self.max_tries,
            watch=self._watch,
            tick=self.tick,
            poll=self._poll,
            scratch=self.scratch,
        )
        return dask_export_sources(self._client, folder, key, grouping=grouping)

    # -------------------------------------------------------------- scheduling

    def run(self, sources: Iterable[Source]) -> Iterator[InputResult]:
        """Results of every source, in order (several per split Bundle)."""
        # The Evaluator here gives the rule-set version the workers must match, and reads
        # a source when a retry splits it into its inputs.
        worker.init_local(self.settings, self.evaluator)
        with dask.config.set(RUN_CONFIG):
            client = self._connect()
            try:
                self._prepare(client)
                yield from self._run(client, iter(sources))
            finally:
                self._close()

    def _run(self, client: Client, sources: Iterator[Source]) -> Iterator[InputResult]:
        threads = sum(client.nthreads().values()) or self.workers
        # Keeping more tasks out than twice the threads lets the scheduler queue them
        # itself (one at a time per worker, "root-ish" tasks), and hides its round trip.
        tasks_out = max(8, 4 * threads)
        window = self.window or tasks_out * self.batch_size
        done: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        slots: dict[int, _Slot] = {}
        tasks: dict[str, _Task] = {}
        next_seq = next_out = 0
        exhausted = False

        def submit(units: list[Unit]) -> None:
            self._count += 1
            key = f"osteohooks-replay-{self._run_id}-{self._count}"
            payload = [(slots[seq].source, index) for seq, index in units]
            future = client.submit(evaluate_units, self.settings, payload, key, key=key, pure=False)
            tasks[key] = _Task(units=units, future=future)
            future.add_done_callback(done.put)

        self._state = _RunState(done, slots, tasks, submit)
        self._last_poll = time.monotonic()
        try:
            while True:
                # Pulling sources may group a later export (`group_export`): its wait on
                # the cluster calls `tick` meanwhile, so these tasks are watched still.
                while not exhausted and len(tasks) < tasks_out and len(slots) < window:
                    batch = list(islice(sources, self.batch_size))
                    if not batch:
                        exhausted = True
                        break
                    units: list[Unit] = []
                    for source in batch:
                        slots[next_seq] = _Slot(source)
                        units.append((next_seq, None))
                        next_seq += 1
                    submit(units)
                while next_out in slots and slots[next_out].done:
                    yield from slots.pop(next_out).results()
                    next_out += 1
                if exhausted and not slots:
                    return
                with contextlib.suppress(queue.Empty):
                    done.put(done.get(timeout=self._poll))  # wait for one, then take all
                self.tick()
        finally:
            self._state = None
            for task in tasks.values():
                task.future.release()
            tasks.clear()

    def tick(self, grouping: Watched | None = None) -> None:
        """Between two waits on the cluster (the evaluation loop's, or that of an
        export's grouping, `cds.replay.dask_export`): take the evaluation tasks that
        finished, and about once a second check the deadline of the evaluation tasks
        and of the `grouping` tasks given, and that the LocalCluster is whole."""
        client, state = self._client, self._state
        if client is None:
            return
        watched: list[Watched] = [grouping] if grouping is not None else []
        if state is not None:
            finished: list[Future[Any]] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    finished.append(state.done.get_nowait())
            self._settle(client, finished, state.tasks, state.slots, state.submit)
            watched.append((state.tasks, self._overran))
        now = time.monotonic()
        if now - self._last_poll < self._poll:
            return
        self._last_poll = now
        self._watch.check(client, now, watched)
        self._heal()

    def _settle(
        self,
        client: Client,
        finished: list[Future[Any]],
        tasks: dict[str, _Task],
        slots: dict[int, _Slot],
        submit: Any,
    ) -> None:
        """Take the results of finished tasks; retry or settle the ones that failed."""
        ok: list[_Task] = []
        for future in finished:
            task = tasks.get(str(future.key))
            if task is None or task.future is not future:
                continue  # replaced already (overran its deadline, or its result was lost)
            if future.status == "finished":
                ok.append(task)
                continue
            del tasks[str(future.key)]
            if future.status not in ("error", "cancelled"):  # "lost": its result went with
                future.release()  # its worker; compute it again as a new task (no try is
                submit(task.units)  # charged: no worker died running it)
                continue
            exc = future.exception() if future.status == "error" else None
            if isinstance(exc, KilledWorker):
                self._killed(task, exc, slots, submit)
            else:  # a bug, or cancelled from outside: every input of it fails, with why
                error = exc or RuntimeError(f"Dask task {future.key} was {future.status}")
                for seq, index in task.units:
                    source = slots[seq].source
                    self._store(
                        slots, (seq, index), [worker.internal_error(source.name, source.key, error)]
                    )
            future.release()
        if not ok:
            return
        futures = [task.future for task in ok]
        try:
            values = client.sync(client._gather, futures, callback_timeout=GATHER_TIMEOUT)
        except Exception:  # one went with its worker after finishing: take them one by one
            for task in ok:
                self._settle_one(task, tasks, slots, submit)
            return
        for task, value in zip(ok, values, strict=True):
            del tasks[str(task.future.key)]
            for unit, results in zip(task.units, value, strict=True):
                self._store(slots, unit, results)
            task.future.release()

    def _settle_one(
        self, task: _Task, tasks: dict[str, _Task], slots: dict[int, _Slot], submit: Any
    ) -> None:
        del tasks[str(task.future.key)]
        try:
            value = task.future.result(timeout=GATHER_TIMEOUT)
        except KilledWorker as exc:
            self._killed(task, exc, slots, submit)
            return
        except Exception as exc:
            if task.future.status != "error":
                # Not an error of the task: its result went with a dead worker (the gather
                # timed out, or its connection closed: CommClosedError) and Dask has not
                # brought it back. Compute it again as a new task (results are
                # deterministic; the old one is dropped, so nothing is written twice). No
                # try is charged: no worker died running it.
                submit(task.units)
                return
            for seq, index in task.units:
                source = slots[seq].source
                self._store(
                    slots, (seq, index), [worker.internal_error(source.name, source.key, exc)]
                )
            return
        finally:
            task.future.release()
        for unit, results in zip(task.units, value, strict=True):
            self._store(slots, unit, results)

    def _killed(self, task: _Task, exc: KilledWorker, slots: dict[int, _Slot], submit: Any) -> None:
        """A task's worker died under it. A worker we stopped for overrunning may have been
        handed new tasks before the scheduler saw it go: those are tried again uncharged."""
        self._retry(task, self._watch.charged(exc), slots, submit, hung=False)

    def _store(self, slots: dict[int, _Slot], unit: Unit, results: list[InputResult]) -> None:
        seq, index = unit
        slot = slots[seq]
        slot.parts[index] = results
        slot.pending.discard(index)
        self._tries.pop(unit, None)
        self._timeouts.pop(unit, None)

    def _retry(
        self, task: _Task, deaths: int, slots: dict[int, _Slot], submit: Any, *, hung: bool
    ) -> None:
        """A task's worker died (or overran) `deaths` times: split it, retry or settle."""
        for unit in task.units:
            self._tries[unit] = self._tries.get(unit, 0) + deaths
            if hung:
                self._timeouts[unit] = self._timeouts.get(unit, 0) + deaths
        # Which unit of a task of several killed it is not known: one task each.
        alone = len(task.units) == 1
        for unit in task.units:
            self._again(unit, slots, submit, split=alone)

    def _again(self, unit: Unit, slots: dict[int, _Slot], submit: Any, *, split: bool) -> None:
        """Try a unit again, or, after max_tries, settle it as crashed or hung. A whole
        source of several inputs (a Bundle of several Patients) is first split into one
        unit per input, each with the tries of the source (at most max_tries - 1)."""
        seq, index = unit
        slot = slots[seq]
        tries = self._tries.get(unit, 0)
        if index is None and (split or tries >= self.max_tries):
            items = worker.read_items(slot.source)
            if len(items) > 1:
                tries = min(self._tries.pop(unit, 0), self.max_tries - 1)
                timeouts = min(self._timeouts.pop(unit, 0), tries)
                slot.pending = set(range(len(items)))
                for i in range(len(items)):
                    self._tries[(seq, i)] = tries
                    self._timeouts[(seq, i)] = timeouts
                    submit([(seq, i)])
                return
        if tries < self.max_tries:
            submit([unit])
            return
        name, key = slot.source.name, slot.source.key
        if index is not None:
            item = worker.read_items(slot.source)[index]
            name, key = item.name, item.key
        result = (
            hung_result(name, key, tries, self.deadline)
            if self._timeouts.get(unit, 0) >= tries
            else crash_result(name, key, tries)
        )
        self._store(slots, unit, [result])

    def _heal(self) -> None:
        """A nanny of our LocalCluster whose new worker was killed while it started gives
        up (it closes): start a new nanny instead (`restore_workers`)."""
        if self._cluster is not None:
            restore_workers(self._cluster)

    def _overran(self, key: str, task: _Task) -> None:  # noqa: ARG002 (Watch's handler)
        """A task overran the deadline on one input (its worker is stopped). Only the
        unit it was on is charged; the others (done, their results gone with the worker,
        or not started) go again together, uncharged. Not known which (the worker never
        answered): every unit is charged and tried alone, as after a death."""
        assert self._state is not None
        slots, submit = self._state.slots, self._state.submit
        task.future.cancel()
        task.future.release()
        if task.unit is None:
            self._retry(task, 1, slots, submit, hung=True)
            return
        culprit = task.units[task.unit]
        self._tries[culprit] = self._tries.get(culprit, 0) + 1
        self._timeouts[culprit] = self._timeouts.get(culprit, 0) + 1
        others = [unit for unit in task.units if unit != culprit]
        if others:
            submit(others)
        self._again(culprit, slots, submit, split=True)
