"""Evaluating sources in worker processes: one Evaluator per process, built once.

`init_worker` runs once in each worker process and builds the Evaluator from the rules
folder (or keeps the one inherited by fork); `read_items` and `process_item` evaluate a
source one input at a time, so the pool knows which input a dying worker was on.
Nothing a source contains can raise out of here: bad input is `unreadable`, an
`EvaluationError` (or a bug) is `failed`, each with an OperationOutcome. Only a native
crash (SIGSEGV in the C engine) or a hang escapes, as the death or silence of the
process: the pool in `cds.replay.pool` contains that.

Card and suggestion uuids are name-based (the pipeline's uuid5 seeded with the input name,
`EvaluationInput.uuid_seed`), so that a rerun with the same `--as-of` is byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cds.contracts.cards import EXTENSION_KEY, Card, dump_cards
from cds.contracts.outcome import error_count, error_outcome, is_fatal
from cds.jsontext import dumps
from cds.replay.reader import Job, Unreadable, read_source
from cds.runtime import settle_heap

if TYPE_CHECKING:
    from cds.pipeline import Evaluator
    from cds.replay.inputs import Source

Status = Literal["ok", "unreadable", "failed"]


@dataclass(frozen=True, slots=True)
class InputResult:
    """The result of one input: what the reports and golden comparisons are made from.

    Cards and outcome travel as JSON text (made once, in the worker): the parent then
    writes an NDJSON line without decoding or re-encoding anything, and pickling a string
    is cheaper than pickling nested dicts. `topics` and `data_errors` feed the summary.
    """

    name: str
    key: str
    status: Status
    cards_json: str
    outcome_json: str
    topics: tuple[str, ...]
    data_errors: int
    seconds: float = 0.0
    #: The hook evaluated and the Patient the cards are about ("" / None when the input
    #: could not be read that far): the Parquet results carry them, NDJSON does not.
    hook: str = ""
    patient_id: str | None = None

    @classmethod
    def of(
        cls,
        name: str,
        key: str,
        cards: Sequence[Card],
        outcome: dict[str, Any] | None,
        status: Status,
        seconds: float = 0.0,
        *,
        hook: str = "",
        patient_id: str | None = None,
    ) -> InputResult:
        values = dump_cards(cards)
        return cls(
            name,
            key,
            status,
            _utf8_json(values),
            _utf8_json(outcome),
            tuple(card_topic(card) for card in values),
            error_count(outcome) if status == "ok" else 0,
            seconds,
            hook,
            patient_id,
        )

    @property
    def cards(self) -> list[dict[str, Any]]:
        """The cards as written (`dump_cards`): what NDJSON, Parquet, goldens and impact read."""
        value: list[dict[str, Any]] = json.loads(self.cards_json)
        return value

    @property
    def outcome(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = json.loads(self.outcome_json)
        return value


def _utf8_json(value: Any) -> str:
    """JSON text of value that can be written as UTF-8 whatever it holds: a lone
    surrogate (an input's `"\\ud800"`, read as such) is written as its escape, as the
    input had it, instead of making the report unwritable."""
    text = dumps(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def card_topic(card: dict[str, Any]) -> str:
    """The `source.topic.code` of a card ("(no topic)" when it has none)."""
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, dict) else None
    code = topic.get("code") if isinstance(topic, dict) else None
    return code if isinstance(code, str) else "(no topic)"


def card_payload(card: dict[str, Any]) -> dict[str, Any]:
    """The card's payload (`extension[EXTENSION_KEY]`; empty when it has none)."""
    extension = card.get("extension")
    payload = extension.get(EXTENSION_KEY) if isinstance(extension, dict) else None
    return payload if isinstance(payload, dict) else {}


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every worker needs, passed once at start (picklable)."""

    rules_dir: Path
    as_of: date
    hook: str | None
    #: TEST ONLY: the name of one input whose worker kills itself with SIGSEGV, to test
    #: crash containment (set from OSTEOHOOKS_REPLAY_TEST_CRASH by the CLI; never set
    #: in normal use; ignored when evaluating in-process with --workers 0).
    crash_input: str | None = None
    #: TEST ONLY: the name of one input whose worker hangs (sleeps for ever), to test the
    #: per-input deadline (OSTEOHOOKS_REPLAY_TEST_HANG; ignored with --workers 0).
    hang_input: str | None = None


_evaluator: Evaluator | None = None
_settings: WorkerSettings | None = None
_in_pool = False


def init_worker(settings: WorkerSettings) -> None:
    """A worker process's set-up (the local pool's workers, the Dask engine's plugin):
    this process's Evaluator, built once.

    Under the `fork` start method the Evaluator built in the parent is inherited (no
    start-up cost, instant restarts after a crash); otherwise it is built here.
    """
    global _in_pool
    _in_pool = True
    # Ctrl-C is the parent's to handle: it stops the pool and reports what was done.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_local(settings, _evaluator)
    settle_heap()  # once per process: gc.freeze of the start-up heap, gen0 threshold


def ensure_worker(settings: WorkerSettings) -> None:
    """`init_worker`, unless this process is set up with these settings already (a worker
    of a cluster that several runs share); the Evaluator is kept for the same rules folder."""
    global _evaluator
    if _in_pool and _settings == settings:
        return
    if _settings is not None and _settings.rules_dir != settings.rules_dir:
        _evaluator = None
    init_worker(settings)


def ruleset_version() -> str | None:
    """The rule-set version of this process's Evaluator (None before init)."""
    return _evaluator.ruleset_version if _evaluator is not None else None


def init_local(settings: WorkerSettings, evaluator: Evaluator | None = None) -> None:
    """Prepare evaluation in this process (also used for --workers 0)."""
    global _evaluator, _settings
    from cds.pipeline import Evaluator

    _settings = settings
    _evaluator = evaluator or Evaluator.from_rules_dir(settings.rules_dir)


def evaluate_job(job: Job) -> InputResult:
    """Evaluate one job with this process's Evaluator (never raises for bad input)."""
    from cds.pipeline import EvaluationError

    assert _evaluator is not None, "init_worker was not called"
    assert _settings is not None, "init_worker was not called"
    if _in_pool and _settings.crash_input is not None and job.name == _settings.crash_input:
        os.kill(os.getpid(), signal.SIGSEGV)  # TEST ONLY: see WorkerSettings.crash_input
    if _in_pool and _settings.hang_input is not None and job.name == _settings.hang_input:
        while True:  # TEST ONLY: see WorkerSettings.hang_input
            time.sleep(3600)
    started = time.perf_counter()
    try:
        result = _evaluator.evaluate(job.to_input(_settings.as_of))
    except EvaluationError as exc:
        return InputResult.of(
            job.name,
            job.key,
            [],
            error_outcome(f"{job.name}: evaluation failed: {exc}", code="processing"),
            "failed",
            time.perf_counter() - started,
            hook=job.hook,
            patient_id=job.patient_id,
        )
    except Exception as exc:  # a bug must not end a 100,000-input run: report and go on
        return internal_error(job.name, job.key, exc)
    cards = result.cards
    # A `fatal` issue (no usable Patient, no birth date) means the data could not be
    # evaluated at all: that is an input that cannot be read, not "nothing to say".
    status: Status = "unreadable" if is_fatal(result.outcome) else "ok"
    return InputResult.of(
        job.name,
        job.key,
        cards,
        result.outcome,
        status,
        time.perf_counter() - started,
        hook=job.hook,
        patient_id=result.patient_id,
    )


Item = Job | Unreadable | InputResult


def read_items(source: Source) -> list[Item]:
    """What one source holds to evaluate (an InputResult when reading it hit a bug)."""
    assert _settings is not None, "init_worker was not called"
    try:
        return list(read_source(source, _settings.hook))
    except Exception as exc:  # a bug must not end the run: this input fails, with why
        return [internal_error(source.name, source.key, exc)]


def process_item(item: Item) -> InputResult:
    """The result of one job read from a source (or of why it could not be read)."""
    if isinstance(item, InputResult):
        return item
    if isinstance(item, Unreadable):
        return InputResult.of(item.name, item.key, [], item.outcome, "unreadable")
    return evaluate_job(item)


def process_source(source: Source) -> list[InputResult]:
    """All results of one source (several for a split Bundle), in order."""
    return [process_item(item) for item in read_items(source)]


def internal_error(name: str, key: str, exc: BaseException) -> InputResult:
    """The result of an input that hit a bug in osteohooks (reported, never hidden)."""
    return InputResult.of(
        name,
        key,
        [],
        error_outcome(
            f"{name}: internal error {type(exc).__name__}: {exc} "
            "(please report it with this input)",
            code="exception",
        ),
        "failed",
    )
