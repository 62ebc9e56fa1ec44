"""`cds report RESULTS --out report.html`: the population report of a replay run.

RESULTS is what `cds replay` wrote: an NDJSON results file (`--format ndjson`) or a
Parquet results folder (`--format parquet --out DIR`). Both are read as a stream, one
input at a time, into counters (`Tally`): memory does not grow with the number of
inputs (the slowest inputs are a bounded heap). `population_page` turns the counters
into a `cds.replay.report.Page`.

NDJSON lines do not say an input's status or time. An input with no cards whose outcome
has a `fatal` issue, or an issue whose diagnostics start with the input's own name (how
replay words why it could not read or evaluate an input), counts as not evaluated; the
slowest inputs need the Parquet folder (`inputs.parquet` has the seconds).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from cds.contracts.cards import (
    CARD_TOPICS,
    INDICATORS,
    Category,
    Direction,
    Site,
)
from cds.jsontext import loads
from cds.replay.report import INDICATOR_COLOURS, BarChart, Page, Table
from cds.replay.worker import card_payload, card_topic

#: How many of the slowest inputs the report lists.
SLOWEST = 20
NO_SITE = "(no site)"
NOT_COMPARABLE = "not comparable"


class ReportError(ValueError):
    """RESULTS cannot be read (what, where, and how to make it)."""


@dataclass(frozen=True, slots=True)
class CardView:
    """What the report reads of one card."""

    topic: str
    indicator: str
    payload: dict[str, Any]


@dataclass(slots=True)
class InputRecord:
    """One input of a replay run, as the report reads it."""

    name: str
    status: str  # ok | unreadable | failed | not-evaluated (NDJSON: either of the two)
    seconds: float | None
    cards: list[CardView]
    issues: list[tuple[str, str]]  # (severity, code)


#: The payload fields `Tally.add` reads (a Parquet folder is read for these columns only).
TALLIED_FIELDS = (
    "rule",
    "rules",
    "rulesetVersion",
    "category",
    "site",
    "findings",
    "comparable",
    "direction",
    "significant",
    "dueFrom",
    "basis",
)


@dataclass
class Tally:
    """Counters over a run's inputs (flat memory)."""

    inputs: int = 0
    evaluated: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    cards: int = 0
    classification: Counter[tuple[str, str]] = field(default_factory=Counter)
    topic_indicator: Counter[tuple[str, str]] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    findings: Counter[tuple[str, str]] = field(default_factory=Counter)
    change: Counter[tuple[str, bool]] = field(default_factory=Counter)
    rescan: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    timed: bool = False
    slowest: list[tuple[float, int, str, str, int]] = field(default_factory=list)

    def add(self, record: InputRecord) -> None:
        self.inputs += 1
        self.statuses[record.status] += 1
        if record.status == "ok":
            self.evaluated += 1
        self.cards += len(record.cards)
        contributed: set[str] = set()
        for card in record.cards:
            payload = card.payload
            self.topic_indicator[(card.topic, card.indicator)] += 1
            rules = payload.get("rules") or [payload.get("rule")]
            contributed.update(str(rule) for rule in rules if rule)
            if isinstance(payload.get("rulesetVersion"), str):
                self.versions[payload["rulesetVersion"]] += 1
            if card.topic == "bmd-classification":
                site = payload.get("site") or NO_SITE
                self.classification[(str(payload.get("category")), str(site))] += 1
            for finding in payload.get("findings") or ():
                self.findings[(str(finding), card.topic)] += 1
            if card.topic == "bmd-change":
                direction = payload.get("direction") if payload.get("comparable") else None
                self.change[
                    (str(direction or NOT_COMPARABLE), bool(payload.get("significant")))
                ] += 1
            if card.topic == "rescan-interval" and isinstance(payload.get("dueFrom"), str):
                month = payload["dueFrom"][:7]
                self.rescan[(month, str(payload.get("basis") or ""))] += 1
        self.rules.update(contributed)
        for severity, code in record.issues:
            self.errors[(severity, code, record.status)] += 1
        if record.seconds is not None:
            self.timed = True
            entry = (record.seconds, -self.inputs, record.name, record.status, len(record.cards))
            if len(self.slowest) < SLOWEST:
                heapq.heappush(self.slowest, entry)
            else:
                heapq.heappushpop(self.slowest, entry)


# ------------------------------------------------------------------------------- reading


def _card_view(card: Any) -> CardView | None:
    if not isinstance(card, dict):
        return None
    return CardView(card_topic(card), str(card.get("indicator") or "?"), card_payload(card))


def _issues(outcome: Any) -> list[dict[str, Any]]:
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def _ndjson_status(name: str, cards: list[Any], issues: list[dict[str, Any]]) -> str:
    if cards:
        return "ok"
    for issue in issues:
        diagnostics = issue.get("diagnostics")
        if issue.get("severity") == "fatal" or (
            isinstance(diagnostics, str) and diagnostics.startswith(f"{name}:")
        ):
            return "not-evaluated"
    return "ok"


def read_ndjson(path: Path) -> Iterator[InputRecord]:
    """The inputs of an NDJSON results file, one line at a time."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = loads(line)
            except ValueError as exc:
                raise ReportError(
                    f"{path}:{number}: not a JSON line of `cds replay --format ndjson` ({exc})"
                ) from None
            if not isinstance(record, dict) or "input" not in record or "cards" not in record:
                raise ReportError(
                    f"{path}:{number}: expected a replay result line "
                    '{"input": ..., "cards": [...], "outcome": ...}'
                )
            name = str(record["input"])
            cards = record["cards"] if isinstance(record["cards"], list) else []
            issues = _issues(record.get("outcome"))
            yield InputRecord(
                name,
                _ndjson_status(name, cards, issues),
                None,
                [view for card in cards if (view := _card_view(card)) is not None],
                [(str(i.get("severity")), str(i.get("code"))) for i in issues],
            )


def _rows(path: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
        raise ReportError(f"{path}: not a Parquet file ({exc})") from None
    if columns is not None:
        columns = [c for c in columns if c in file.schema_arrow.names]
    for batch in file.iter_batches(batch_size=4096, columns=columns):
        yield from batch.to_pylist()


def read_parquet(folder: Path) -> Iterator[InputRecord]:
    """The inputs of a Parquet results folder: `inputs.parquet` joined in order with the
    card and data error rows (all three are written in input order)."""
    from cds.replay.parquet import (
        CARD_COLUMNS,
        CARDS_FILE,
        DATA_ERRORS_FILE,
        INPUTS_FILE,
    )

    for name in (INPUTS_FILE, CARDS_FILE, DATA_ERRORS_FILE):
        if not (folder / name).is_file():
            raise ReportError(
                f"{folder}: no {name}; give the folder `cds replay --format parquet --out "
                "DIR` wrote (or an NDJSON results file)"
            )
    own = {f.name for f in CARD_COLUMNS}
    cards = _rows(folder / CARDS_FILE, ["input", "topic", "indicator", *TALLIED_FIELDS])
    errors = _rows(folder / DATA_ERRORS_FILE, ["input", "severity", "code"])
    card = next(cards, None)
    error = next(errors, None)
    for row in _rows(folder / INPUTS_FILE):
        name = row["input"]
        views: list[CardView] = []
        while card is not None and card["input"] == name:
            payload = {
                key: value.isoformat() if hasattr(value, "isoformat") else value
                for key, value in card.items()
                if key not in own and value is not None
            }
            views.append(CardView(card["topic"], str(card["indicator"] or "?"), payload))
            card = next(cards, None)
        issues: list[tuple[str, str]] = []
        while error is not None and error["input"] == name:
            issues.append((str(error["severity"]), str(error["code"])))
            error = next(errors, None)
        yield InputRecord(name, row["status"], row["seconds"], views, issues)
    if card is not None or error is not None:
        left = card if card is not None else error
        assert left is not None
        raise ReportError(
            f"{folder}: rows for input {left['input']!r} that inputs.parquet does not list "
            "in that order; the folder mixes two runs: replay again into an empty folder"
        )


def read_results(path: Path) -> Iterator[InputRecord]:
    """An NDJSON results file or a Parquet results folder, one input at a time."""
    if path.is_dir():
        return read_parquet(path)
    if not path.is_file():
        raise ReportError(
            f"{path}: no such file or folder; make it with `cds replay ... --format ndjson "
            "--out results.ndjson` (or --format parquet --out DIR)"
        )
    return read_ndjson(path)


def tally(records: Iterable[InputRecord]) -> Tally:
    counts = Tally()
    for record in records:
        counts.add(record)
    return counts


# ---------------------------------------------------------------------------------- page


def _ordered(present: Iterable[str], order: Iterable[str]) -> list[str]:
    """`present`, in `order` first, then the rest sorted."""
    seen = set(present)
    known = [value for value in order if value in seen]
    return known + sorted(seen - set(known))


def population_page(counts: Tally, *, source: str) -> Page:
    """The population report of one run's counters."""
    page = Page(
        "osteohooks population report",
        subtitle=f"cds replay results: {source}",
        footer="Made by `cds report` from replay results; nothing on this page is "
        "loaded from elsewhere.",
    )
    page.add_fact("inputs", f"{counts.inputs:,}")
    page.add_fact("evaluated", f"{counts.evaluated:,}")
    not_evaluated = counts.inputs - counts.evaluated
    page.add_fact("not evaluated", f"{not_evaluated:,}")
    page.add_fact("cards", f"{counts.cards:,}")
    data_errors = sum(n for (sev, _, status), n in counts.errors.items() if status == "ok")
    page.add_fact("data issues", f"{data_errors:,}")
    if counts.versions:
        versions = ", ".join(v[:12] for v in sorted(counts.versions))
        page.add_fact("rule set", versions)

    # patients by category and site
    categories = _ordered((c for c, _ in counts.classification), get_args(Category))
    sites = _ordered((s for _, s in counts.classification), [*get_args(Site), NO_SITE])
    page.add_section(
        "Patients by category and site",
        BarChart(
            categories,
            {s: [counts.classification[(c, s)] for c in categories] for s in sites},
            stacked=True,
            xlabel="patients (inputs with a bmd-classification card)",
        ),
        note="The diagnostic category of each patient's classification card, by the site "
        "it rests on.",
    )

    topics = _ordered((t for t, _ in counts.topic_indicator), CARD_TOPICS)
    indicators = _ordered((i for _, i in counts.topic_indicator), INDICATORS)
    page.add_section(
        "Cards per topic and indicator",
        BarChart(
            topics,
            {i: [counts.topic_indicator[(t, i)] for t in topics] for i in indicators},
            stacked=True,
            colours=INDICATOR_COLOURS,
            xlabel="cards",
        ),
        note="One card per topic and input at most.",
    )

    denominator = max(1, counts.evaluated)
    ranked = sorted(counts.rules.items(), key=lambda item: (-item[1], item[0]))
    page.add_section(
        "Firing rate per rule",
        BarChart(
            [rule for rule, _ in ranked],
            {"inputs": [100.0 * n / denominator for _, n in ranked]},
            xlabel=f"% of the {counts.evaluated:,} evaluated inputs",
            value_format="{:.1f}%",
            annotate=True,
        ),
        note="Share of evaluated inputs whose cards the rule contributed to (the payload's "
        "`rules`); rules that only derive facts are not shown.",
    )

    codes = _ordered((f for f, _ in counts.findings), ())
    finding_topics = _ordered((t for _, t in counts.findings), CARD_TOPICS)
    directions = _ordered((d for d, _ in counts.change), [*get_args(Direction), NOT_COMPARABLE])
    page.add_section(
        "Findings",
        BarChart(
            codes,
            {t: [counts.findings[(f, t)] for f in codes] for t in finding_topics},
            stacked=True,
            xlabel="cards with the finding",
        ),
        BarChart(
            directions,
            {
                "significant": [counts.change[(d, True)] for d in directions],
                "not significant": [counts.change[(d, False)] for d in directions],
            },
            stacked=True,
            colours={"significant": "#D55E00", "not significant": "#56B4E9"},
            xlabel="bmd-change cards",
        ),
        note="Artifact and therapy-safety findings (codes of the clinical spec), then the "
        "change between scans by direction and significance (least significant change).",
    )

    periods, period_of = _periods(m for m, _ in counts.rescan)
    bases = _ordered((b for _, b in counts.rescan), ())
    by_period: Counter[tuple[str, str]] = Counter()
    for (month, basis), n in counts.rescan.items():
        by_period[(period_of(month), basis)] += n
    page.add_section(
        "Rescan windows over time",
        BarChart(
            periods,
            {b: [by_period[(p, b)] for p in periods] for b in bases},
            stacked=True,
            horizontal=False,
            ylabel="rescan-interval cards",
        ),
        note="When the next DXA becomes due (each rescan card's `dueFrom`, by month; by "
        "quarter or year when the windows span more than 3 or 8 years), by the basis of "
        "the interval.",
    )

    kinds = sorted({(sev, code) for sev, code, _ in counts.errors})
    statuses = _ordered((s for _, _, s in counts.errors), ("ok", "not-evaluated", "unreadable"))
    page.add_section(
        "Data errors by kind",
        BarChart(
            [f"{sev} {code}" for sev, code in kinds],
            {
                ("evaluated inputs" if s == "ok" else s): [
                    counts.errors[(sev, code, s)] for sev, code in kinds
                ]
                for s in statuses
            },
            stacked=True,
            xlabel="OperationOutcome issues",
        ),
        note="Issues of evaluated inputs (data errors: the rest of the data was still "
        "evaluated) and why inputs could not be read or evaluated, by severity and code.",
    )

    if counts.timed:
        slowest = sorted(counts.slowest, key=lambda entry: (-entry[0], -entry[1]))
        page.add_section(
            "Slowest inputs",
            Table(
                ["input", "status", "cards", "seconds"],
                [[name, status, n, f"{s:.3f}"] for s, _, name, status, n in slowest],
                numeric=(2, 3),
            ),
            note=f"The {len(slowest)} inputs that took longest to evaluate in a worker.",
        )
    else:
        page.add_section(
            "Slowest inputs",
            note="NDJSON results carry no times: replay with `--format parquet --out DIR` "
            "and run `cds report DIR` for this table.",
        )
    return page


def _periods(months: Iterable[str]) -> tuple[list[str], Callable[[str], str]]:
    """The bars of the rescan chart: every month from the first to the last, or every
    quarter or year when that makes more than 36 or 96 bars; and month -> its bar."""
    every = _month_range(months)
    if len(every) <= 36:
        return every, lambda month: month

    def quarter(month: str) -> str:
        return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}" if len(month) >= 7 else month

    def year(month: str) -> str:
        return month[:4]

    period = quarter if len(every) <= 96 else year
    return list(dict.fromkeys(period(m) for m in every)), period


def _month_range(months: Iterable[str]) -> list[str]:
    """Every month from the first to the last given (YYYY-MM), gaps filled."""
    present = sorted(set(months))
    if not present:
        return []
    try:
        year, month = (int(part) for part in present[0].split("-"))
        end_year, end_month = (int(part) for part in present[-1].split("-"))
    except ValueError:
        return present
    out: list[str] = []
    while (year, month) <= (end_year, end_month) and len(out) < 600:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def write_report(results: Path, out: Path) -> Tally:
    """Read RESULTS, write the report page to `out`; return the counters."""
    counts = tally(read_results(results))
    out.write_text(population_page(counts, source=str(results)).render(), encoding="utf-8")
    return counts
