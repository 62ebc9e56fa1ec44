"""The evaluator in service, and reloading it without a restart.

`RuleSetHolder.reload()` builds a new `Evaluator` from the rules folder; if the rules do
not validate it logs every `path:line:col: message` and keeps the last good evaluator.
Reloads are triggered by SIGHUP and, when `--reload-rules` is on, by polling the folder.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("osteohooks.rules")

RULE_SUFFIXES = (".yaml", ".yml")
# A replaced evaluator is closed (its durable_rules rule set freed in the C engine, ~1.6 MB
# for the bundled rules) at the first reload this long after it left service: an
# evaluation that took it before the swap has finished by then.
RETIRE_SECONDS = 60.0


class EvaluatorLike(Protocol):
    """What the service needs of `cds.pipeline.Evaluator` (tests may pass a double)."""

    @property
    def ruleset_version(self) -> str: ...

    def evaluate(self, data: Any, /) -> Any: ...


def load_evaluator(rules_dir: Path) -> EvaluatorLike:
    """`Evaluator.from_rules_dir`; raises `cds.rules.RuleSetError` on invalid rules."""
    from cds.pipeline import Evaluator

    evaluator: EvaluatorLike = Evaluator.from_rules_dir(rules_dir)
    return evaluator


def rule_errors(exc: BaseException) -> list[str]:
    """The `path:line:col: message` lines of a RuleSetError (or the exception text)."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list | tuple) and errors:
        return [str(e) for e in errors]
    return [f"{type(exc).__name__}: {exc}"]


def folder_fingerprint(folder: Path) -> str:
    """Changes whenever a rule file is added, removed or edited (name, size, mtime)."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.suffix in RULE_SUFFIXES and path.is_file():
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class RuleSetHolder:
    """Holds the evaluator in service; swaps it atomically on a successful reload."""

    def __init__(self, evaluator: EvaluatorLike, rules_dir: Path | None) -> None:
        self._evaluator = evaluator
        self.rules_dir = rules_dir
        self._lock = threading.Lock()
        self.fingerprint = folder_fingerprint(rules_dir) if rules_dir else ""
        self.last_error: list[str] = []
        self._retired: list[tuple[float, EvaluatorLike]] = []

    @property
    def evaluator(self) -> EvaluatorLike:
        return self._evaluator

    def reload(self) -> bool:
        """Load the rules folder again; True when the new rule set is in service."""
        if self.rules_dir is None:
            log.warning("rule reload requested but the evaluator was not loaded from a folder")
            return False
        with self._lock:
            self.fingerprint = folder_fingerprint(self.rules_dir)
            try:
                fresh = load_evaluator(self.rules_dir)
            except Exception as exc:
                self.last_error = rule_errors(exc)
                log.error(
                    "rule reload failed; the last good rule set (%s) stays in service:\n%s",
                    self._evaluator.ruleset_version,
                    "\n".join(self.last_error),
                    extra={"event": "rules-reload-failed"},
                )
                return False
            retired = self._evaluator
            old = retired.ruleset_version
            self._evaluator = fresh
            self.last_error = []
            self._close_retired(time.monotonic())
            self._retired.append((time.monotonic(), retired))
            log.info(
                "rules reloaded: %s -> %s",
                old,
                fresh.ruleset_version,
                extra={"event": "rules-reloaded", "rulesetVersion": fresh.ruleset_version},
            )
            return True

    def _close_retired(self, now: float) -> None:
        keep: list[tuple[float, EvaluatorLike]] = []
        for since, evaluator in self._retired:
            close = getattr(evaluator, "close", None)
            if now - since < RETIRE_SECONDS:
                keep.append((since, evaluator))
            elif callable(close):
                close()
        self._retired = keep

    def changed(self) -> bool:
        return self.rules_dir is not None and folder_fingerprint(self.rules_dir) != self.fingerprint
