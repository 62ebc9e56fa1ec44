"""Counting a replay run without keeping its results (memory stays flat)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from cds.replay.golden import GoldenCheck
from cds.replay.worker import InputResult


@dataclass
class Summary:
    """Counters over the results of a run."""

    inputs: int = 0
    evaluated: int = 0
    unreadable: int = 0
    failed: int = 0
    cards: int = 0
    topics: Counter[str] = field(default_factory=Counter)
    data_errors: int = 0
    inputs_with_data_errors: int = 0
    golden_matched: int = 0
    golden_differed: int = 0
    golden_written: int = 0
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def add(self, result: InputResult, golden: GoldenCheck | None = None) -> None:
        self.inputs += 1
        if result.status == "unreadable":
            self.unreadable += 1
        elif result.status == "failed":
            self.failed += 1
        else:
            self.evaluated += 1
            self.data_errors += result.data_errors
            self.inputs_with_data_errors += 1 if result.data_errors else 0
        self.cards += len(result.topics)
        self.topics.update(result.topics)
        if golden is not None:
            if golden.differs:
                self.golden_differed += 1
            else:
                self.golden_matched += 1

    def finish(self) -> None:
        self.seconds = time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Exit status 0: every input read and evaluated, no golden difference."""
        return self.unreadable == 0 and self.failed == 0 and self.golden_differed == 0

    def line(self) -> str:
        """The summary in one paragraph of plain text."""
        topics = ", ".join(f"{topic} {count}" for topic, count in sorted(self.topics.items()))
        parts = [
            f"{self.inputs} inputs: {self.evaluated} evaluated, {self.unreadable} unreadable, "
            f"{self.failed} failed",
            f"{self.cards} cards" + (f" ({topics})" if topics else ""),
            f"{self.data_errors} data errors in {self.inputs_with_data_errors} inputs",
        ]
        if self.golden_matched or self.golden_differed:
            parts.append(f"golden: {self.golden_matched} matched, {self.golden_differed} differed")
        if self.golden_written:
            parts.append(f"golden: {self.golden_written} written")
        parts.append(f"{self.seconds:.2f} s, {self.rate:.1f} inputs/s")
        return "; ".join(parts)
