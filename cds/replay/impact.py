"""`cds impact`: what a rule change does to a population, before it ships.

The population is evaluated twice with the replay machinery (the pool of `cds replay`'s
engine, local processes or Dask, with the same discovery, reading and evaluation): once
with the base rules, once with the new ones. The base run's results go to a temporary
NDJSON file; the new run is then read beside it in input order, so memory stays flat
whatever the population size.

Two answers are compared as golden results are (`cds.replay.golden.normalise`: uuids and
`rulesetVersion` ignored). Cards are paired per topic (by their rule first), and every
difference is one `Change` of a kind:

- `card-added`, `card-removed`: a topic's card appears or disappears;
- `rule-added`, `rule-removed`: a rule joins or leaves a card (cards that merge several
  rules, such as the workup card, list them in the payload's `rules`);
- `indicator-changed`; `payload-changed` (one per payload field, named);
- `text-changed` (summary or detail), `suggestions-changed`, `links-changed`,
  `card-changed` (any other card field);
- `outcome-changed`: the input's status or its data errors differ.

Changes are grouped by (kind, topic, rule, field), each group counting the patients it
touches, with a few example patients (before and after).
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as default
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from cds.jsontext import dumps
from cds.replay.golden import normalise, word_diff
from cds.replay.inputs import discover
from cds.replay.pool import DEFAULT_DEADLINE, DEFAULT_MAX_TRIES
from cds.replay.worker import InputResult, WorkerSettings, card_payload, card_topic

if TYPE_CHECKING:
    from cds.pipeline import Evaluator

#: Example patients kept per group of changes (the default of `--examples`).
DEFAULT_EXAMPLES = 3
#: Card fields compared as their own kind of change; any other field is `card-changed`.
_TEXT_FIELDS = ("summary", "detail")
#: Payload keys that name the rules of a card: compared as rule-added / rule-removed.
_RULE_KEYS = ("rule", "rules")
_ABSENT = None


class ImpactError(Exception):
    """The comparison cannot run (a base revision or folder that cannot be had)."""


# ------------------------------------------------------------------ what changed


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between an input's base answer and its new one."""

    kind: str
    topic: str
    rule: str
    field: str | None
    before: Any
    after: Any


def _rule(card: dict[str, Any]) -> str:
    rule = card_payload(card).get("rule")
    return rule if isinstance(rule, str) else "(no rule)"


def _rules(card: dict[str, Any]) -> list[str]:
    payload = card_payload(card)
    rules = payload.get("rules")
    if isinstance(rules, list):
        return [r for r in rules if isinstance(r, str)]
    return [_rule(card)] if isinstance(payload.get("rule"), str) else []


def _pair(
    base: list[dict[str, Any]], new: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Cards of one topic paired: the same rule first, then in order."""
    left = list(base)
    right = list(new)
    for card in list(left):
        match = next((c for c in right if _rule(c) == _rule(card)), None)
        if match is not None:
            left.remove(card)
            right.remove(match)
            yield card, match
    for index in range(max(len(left), len(right))):
        yield (
            left[index] if index < len(left) else None,
            right[index] if index < len(right) else None,
        )


def _card_changes(topic: str, before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    rule = _rule(after)
    old_rules, new_rules = _rules(before), _rules(after)
    for name in new_rules:
        if name not in old_rules:
            out.append(Change("rule-added", topic, name, None, None, after.get("summary")))
    for name in old_rules:
        if name not in new_rules:
            out.append(Change("rule-removed", topic, name, None, before.get("summary"), None))
    if before.get("indicator") != after.get("indicator"):
        out.append(
            Change(
                "indicator-changed",
                topic,
                rule,
                "indicator",
                before.get("indicator"),
                after.get("indicator"),
            )
        )
    old_payload, new_payload = card_payload(before), card_payload(after)
    for key in sorted(set(old_payload) | set(new_payload)):
        if key in _RULE_KEYS:
            continue
        if old_payload.get(key, _ABSENT) != new_payload.get(key, _ABSENT):
            out.append(
                Change(
                    "payload-changed", topic, rule, key, old_payload.get(key), new_payload.get(key)
                )
            )
    for key in sorted((set(before) | set(after)) - {"indicator", "extension"}):
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old == new:
            continue
        if key in _TEXT_FIELDS:
            kind = "text-changed"
        elif key in ("suggestions", "links"):
            kind = f"{key}-changed"
        else:
            kind = "card-changed"
        out.append(Change(kind, topic, rule, key, old, new))
    return out


def _outcome_summary(status: str, outcome: Any) -> dict[str, Any]:
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    return {
        "status": status,
        "issues": len(issues) if isinstance(issues, list) else 0,
    }


def compare_answers(
    base_status: str,
    base_cards: list[dict[str, Any]],
    base_outcome: Any,
    new_status: str,
    new_cards: list[dict[str, Any]],
    new_outcome: Any,
) -> list[Change]:
    """Every difference between two answers for one input (empty: the same answer)."""
    base = normalise("", base_cards, base_outcome)
    new = normalise("", new_cards, new_outcome)
    out: list[Change] = []
    if base_status != new_status or base["outcome"] != new["outcome"]:
        out.append(
            Change(
                "outcome-changed",
                "(outcome)",
                "(none)",
                "status" if base_status != new_status else "issue",
                _outcome_summary(base_status, base_outcome),
                _outcome_summary(new_status, new_outcome),
            )
        )
    by_topic: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for card in base["cards"]:
        by_topic.setdefault(card_topic(card), ([], []))[0].append(card)
    for card in new["cards"]:
        by_topic.setdefault(card_topic(card), ([], []))[1].append(card)
    for topic in sorted(by_topic):
        old_cards, new_cards_ = by_topic[topic]
        for before, after in _pair(old_cards, new_cards_):
            if before is None and after is not None:
                out.append(
                    Change("card-added", topic, _rule(after), None, None, after.get("summary"))
                )
            elif after is None and before is not None:
                out.append(
                    Change("card-removed", topic, _rule(before), None, before.get("summary"), None)
                )
            elif before is not None and after is not None and before != after:
                out.extend(_card_changes(topic, before, after))
    return out


# ------------------------------------------------------------------ the report


@dataclass(slots=True)
class Example:
    """One patient of a group: its input name and the values before and after."""

    input: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        out = {"input": self.input, "before": self.before, "after": self.after}
        if _long_texts(self.before, self.after):
            out["wordDiff"] = word_diff(self.before, self.after)
        return out


@dataclass(slots=True)
class Group:
    """The patients whose answers changed the same way."""

    kind: str
    topic: str
    rule: str
    field: str | None
    patients: int = 0
    examples: list[Example] = default(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "rule": self.rule,
            "field": self.field,
            "patients": self.patients,
            "examples": [e.as_dict() for e in self.examples],
        }


@dataclass(slots=True)
class Impact:
    """What a rule change does to a population."""

    base: str
    new: str
    as_of: date
    inputs: int = 0
    changed: int = 0
    base_failed: int = 0
    new_failed: int = 0
    by_topic: Counter[str] = default(default_factory=Counter)
    by_rule: Counter[str] = default(default_factory=Counter)
    by_kind: Counter[str] = default(default_factory=Counter)
    groups: dict[tuple[str, str, str, str | None], Group] = default(default_factory=dict)
    examples: int = DEFAULT_EXAMPLES

    @property
    def unchanged(self) -> int:
        return self.inputs - self.changed

    def add(self, name: str, changes: list[Change]) -> None:
        """Count one input (its changes; none when the answer is the same)."""
        self.inputs += 1
        if not changes:
            return
        self.changed += 1
        self.by_topic.update({c.topic for c in changes})
        self.by_rule.update({c.rule for c in changes})
        self.by_kind.update({c.kind for c in changes})
        seen: set[tuple[str, str, str, str | None]] = set()
        for change in changes:
            key = (change.kind, change.topic, change.rule, change.field)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(*key)
            if key in seen:
                continue
            seen.add(key)
            group.patients += 1
            if len(group.examples) < self.examples:
                group.examples.append(Example(name, change.before, change.after))

    def sorted_groups(self) -> list[Group]:
        """Groups with the most patients first (then by topic, rule, kind, field)."""
        return sorted(
            self.groups.values(),
            key=lambda g: (-g.patients, g.topic, g.rule, g.kind, g.field or ""),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "new": self.new,
            "asOf": self.as_of.isoformat(),
            "inputs": self.inputs,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "failed": {"base": self.base_failed, "new": self.new_failed},
            "byTopic": dict(sorted(self.by_topic.items(), key=lambda kv: (-kv[1], kv[0]))),
            "byRule": dict(sorted(self.by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
            "byKind": dict(sorted(self.by_kind.items(), key=lambda kv: (-kv[1], kv[0]))),
            "groups": [g.as_dict() for g in self.sorted_groups()],
        }


def _short(value: Any, limit: int = 100) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _long_texts(before: Any, after: Any) -> bool:
    return isinstance(before, str) and isinstance(after, str) and max(len(before), len(after)) > 60


def _change_text(before: Any, after: Any) -> str:
    """Before -> after; two long texts as the words that differ (the part that changed
    may be at the end of a long detail)."""
    if _long_texts(before, after):
        return word_diff(before, after)
    return f"{_short(before)} -> {_short(after)}"


def render_text(impact: Impact) -> str:
    """The report for a terminal or a CI log."""
    share = f" ({100 * impact.changed / impact.inputs:.1f}%)" if impact.inputs else ""
    lines = [
        f"cds impact: {impact.inputs} inputs, {impact.changed} with a changed answer{share}, "
        f"{impact.unchanged} unchanged (as of {impact.as_of.isoformat()})",
        f"  base: {impact.base}",
        f"  new:  {impact.new}",
    ]
    if impact.base_failed or impact.new_failed:
        lines.append(
            f"  inputs not evaluated (unreadable or failed): {impact.base_failed} with the base "
            f"rules, {impact.new_failed} with the new rules"
        )
    if not impact.changed:
        lines.append("no answer changes.")
        return "\n".join(lines) + "\n"
    lines.append("changed answers by topic: " + _counts(impact.by_topic))
    lines.append("changed answers by rule:  " + _counts(impact.by_rule))
    lines.append("")
    for group in impact.sorted_groups():
        what = f"{group.kind} {group.field}" if group.field else group.kind
        lines.append(f"{group.topic}  {group.rule}  {what}: {group.patients} patients")
        for example in group.examples:
            lines.append(f"    {example.input}: {_change_text(example.before, example.after)}")
    return "\n".join(lines) + "\n"


def render_html(impact: Impact) -> str:
    """The report as a self-contained page (`cds.replay.report.Page`): the totals, charts of
    the changed answers by topic, by rule and by kind, and a table of every group with its
    examples."""
    from cds.replay.report import BarChart, Page, Table

    share = f" ({100 * impact.changed / impact.inputs:.1f}%)" if impact.inputs else ""
    page = Page(
        "Impact of a rule change",
        subtitle=f"{impact.new} against {impact.base}, as of {impact.as_of.isoformat()}",
        footer="cds impact: answers compared as golden results are (uuids, card order and "
        "rulesetVersion ignored); a patient counts once per group.",
    )
    page.add_fact("inputs", impact.inputs)
    page.add_fact("changed answers", f"{impact.changed}{share}")
    page.add_fact("unchanged", impact.unchanged)
    if impact.base_failed or impact.new_failed:
        page.add_fact("not evaluated (base / new)", f"{impact.base_failed} / {impact.new_failed}")
    for title, counter in (
        ("Changed answers by topic", impact.by_topic),
        ("Changed answers by rule", impact.by_rule),
        ("Changed answers by kind of change", impact.by_kind),
    ):
        ordered = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        page.add_section(
            title,
            BarChart([k for k, _ in ordered], {"patients": [v for _, v in ordered]}, annotate=True),
            note="patients whose answer changed this way" if ordered else "no answer changes",
        )
    rows = [
        [
            group.topic,
            group.rule,
            f"{group.kind} {group.field}" if group.field else group.kind,
            str(group.patients),
            " • ".join(f"{e.input}: {_change_text(e.before, e.after)}" for e in group.examples),
        ]
        for group in impact.sorted_groups()
    ]
    page.add_section(
        "Every group of changes",
        Table(["topic", "rule", "change", "patients", "examples"], rows, numeric=(3,)),
        note="most patients first; examples show the value before and after, or the words "
        "that changed",
    )
    return page.render()


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------------ running both


@dataclass(frozen=True, slots=True)
class ImpactOptions:
    """What `cds impact` was asked to compare."""

    paths: list[str]
    as_of: date
    new_rules: Path
    base_rules: Path
    base_label: str
    new_label: str
    hook: str | None = None
    workers: int = 1
    batch_size: int = 8
    deadline: float = DEFAULT_DEADLINE
    max_tries: int = DEFAULT_MAX_TRIES
    examples: int = DEFAULT_EXAMPLES
    #: "local" (the replay process pool) or "dask" (`cds replay --engine dask`'s pool)
    engine: str = "local"
    scheduler: str | None = None
    #: Where an export's grouping keeps its temporary files (`--scratch`; None: TMPDIR).
    scratch: Path | None = None


def _results(
    options: ImpactOptions, rules_dir: Path, evaluator: Evaluator | None
) -> Iterator[InputResult]:
    from cds.replay.runner import ReplayOptions, make_pool

    settings = WorkerSettings(rules_dir=rules_dir, as_of=options.as_of, hook=options.hook)
    replay = ReplayOptions(
        paths=options.paths,
        as_of=options.as_of,
        rules_dir=rules_dir,
        hook=options.hook,
        workers=options.workers,
        batch_size=options.batch_size,
        deadline=options.deadline,
        max_tries=options.max_tries,
        engine=options.engine,
        scheduler=options.scheduler,
        scratch=options.scratch,
    )
    pool = make_pool(replay, settings, evaluator)
    return pool.run(discover(options.paths, pool.group_export))


def _spill(results: Iterable[InputResult], out: IO[bytes]) -> None:
    for r in results:
        out.write(orjson.dumps([r.name, r.status, r.cards_json, r.outcome_json]) + b"\n")


def run_impact(
    options: ImpactOptions,
    *,
    base_evaluator: Evaluator | None = None,
    new_evaluator: Evaluator | None = None,
) -> Impact:
    """Evaluate the population with both rule sets and compare every answer."""
    impact = Impact(options.base_label, options.new_label, options.as_of, examples=options.examples)
    with tempfile.TemporaryFile(prefix="osteohooks-impact-") as spill:
        _spill(_results(options, options.base_rules, base_evaluator), spill)
        spill.seek(0)
        for result in _results(options, options.new_rules, new_evaluator):
            line = spill.readline()
            if not line:
                raise ImpactError(
                    f"{result.name}: the inputs changed while they were evaluated (the base "
                    "run did not see this input); run again on inputs that stay put"
                )
            name, status, cards_json, outcome_json = orjson.loads(line)
            if name != result.name:
                raise ImpactError(
                    f"{result.name}: the inputs changed while they were evaluated (the base run "
                    f"had {name} here); run again on inputs that stay put"
                )
            impact.base_failed += status != "ok"
            impact.new_failed += result.status != "ok"
            changes = compare_answers(
                status,
                orjson.loads(cards_json),
                orjson.loads(outcome_json),
                result.status,
                result.cards,
                result.outcome,
            )
            impact.add(result.name, changes)
        if spill.readline():
            raise ImpactError(
                "the inputs changed while they were evaluated (the new run saw fewer inputs "
                "than the base run); run again on inputs that stay put"
            )
    return impact


# ------------------------------------------------------------------ a base revision


@contextmanager
def rules_at_revision(rules_dir: Path, rev: str) -> Iterator[tuple[Path, str]]:
    """The rules folder as it is in git revision `rev`, in a temporary folder (and a
    label naming it): what `--base-rev` compares against."""
    folder = rules_dir.resolve()
    try:
        top = Path(_git(folder, "rev-parse", "--show-toplevel").strip())
        commit = _git(folder, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except ImpactError as exc:
        raise ImpactError(
            f"--base-rev {rev}: {exc} (the rules folder {rules_dir} must be inside a git "
            "checkout that has this revision; or compare with --base-rules DIR)"
        ) from None
    relative = folder.relative_to(top).as_posix()
    with tempfile.TemporaryDirectory(prefix="osteohooks-base-rules-") as tmp:
        archive = Path(tmp) / "rules.tar"
        try:
            with open(archive, "wb") as out:
                subprocess.run(
                    ["git", "-C", str(top), "archive", "--format=tar", commit, "--", relative],
                    stdout=out,
                    stderr=subprocess.PIPE,
                    check=True,
                )
        except subprocess.CalledProcessError as exc:
            message = exc.stderr.decode("utf-8", "replace").strip()
            raise ImpactError(
                f"--base-rev {rev}: git cannot give {relative}/ at {commit[:12]}: {message} "
                "(was the rules folder elsewhere then? compare with --base-rules DIR)"
            ) from None
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        base = Path(tmp) / relative
        if not base.is_dir():
            raise ImpactError(f"--base-rev {rev}: {relative}/ does not exist at {commit[:12]}")
        yield base, f"{rules_dir} at {rev} ({commit[:12]})"


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError:
        raise ImpactError("git is not installed") from None
    if done.returncode != 0:
        reason = done.stderr.strip() or "unknown revision"
        raise ImpactError(reason.splitlines()[-1])
    return done.stdout
