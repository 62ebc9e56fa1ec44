"""`cds rules test`: run every active rule's `examples` through the engine AND the reference.

An example's `fact` gives field values of the rule's `when` fact type; every other field
takes its schema default, and a required field without a default takes a neutral value
(0, 0.0, false, "", 1970-01-01, or 'unknown' / the first value of an enumeration; see
`FieldSpec.neutral_value`). The whole rule set is evaluated on that one fact, so forward
chaining happens as in production. Expectations:

- `fires`: whether this rule fired on the example fact;
- `emits`: fields of the fact this rule emitted (compared on the keys given);
- `payload`: the rule's card payload after rendering (compared on the keys given;
  `findings` / `items` compare the card's lists);
- `summary_contains`: text the rendered summary must contain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.cards import CardRenderer
from cds.contracts.cards import MAX_SUMMARY
from cds.engine import Engine
from cds.rules.model import Example, Rule
from cds.rules.reference import evaluate
from cds.rules.result import EngineResult, emitted_id
from cds.rules.ruleset import Origin, RuleSet

EXAMPLE_FACT_ID = "example:1"


@dataclass(frozen=True)
class ExampleFailure:
    origin: Origin
    rule_id: str
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.rule_id}: example '{self.name}': {self.message}"


@dataclass
class ExampleReport:
    run: int = 0
    skipped_rules: list[str] = field(default_factory=list)
    failures: list[ExampleFailure] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return self.run - len({(f.rule_id, f.name) for f in self.failures})


def example_fact(ruleset: RuleSet, rule: Rule, example: Example) -> dict[str, Any]:
    """The fact an example describes: neutral values + the example's fields, with id and t."""
    ftype = ruleset.fact_types[rule.when.fact]
    fact: dict[str, Any] = {"id": EXAMPLE_FACT_ID, "t": ftype.name}
    for name, spec in ftype.fields.items():
        value = spec.neutral_value()
        if value is not None:
            fact[name] = value
    for name, value in example.fact.items():
        if value is None:
            fact.pop(name, None)
        else:
            fact[name] = value
    return fact


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return float(expected) == float(got)
    return bool(expected == got)


def _check(
    cards: CardRenderer,
    rule: Rule,
    example: Example,
    result: EngineResult,
    fact: dict[str, Any],
) -> list[str]:
    problems: list[str] = []
    expect = example.expect
    fired = any(f.rule_id == rule.id and f.fact_id == fact["id"] for f in result.firings)
    if fired != expect.fires:
        got = "fired" if fired else "did not fire"
        problems.append(f"expected fires: {str(expect.fires).lower()}, got: {got}")
        return problems
    if not fired:
        return problems
    if expect.emits is not None and rule.then.emit is not None:
        wanted = emitted_id(rule.then.emit.fact, fact["id"], rule.id)
        emitted = next((e for e in result.emitted if e["id"] == wanted), None)
        if emitted is None:
            problems.append("expected an emitted fact, got none")
        else:
            for key, value in expect.emits.items():
                if not _same(value, emitted.get(key)):
                    problems.append(f"emits.{key}: expected {value!r}, got {emitted.get(key)!r}")
    if rule.then.card is not None and (
        expect.payload is not None or expect.summary_contains is not None
    ):
        try:
            card = cards.render_card(rule.id, fact, rule.when.fact)
        except Exception as exc:  # a template error is the example's failure, not a crash
            problems.append(f"rendering the card failed: {type(exc).__name__}: {exc}")
            return problems
        payload = dict(card.get("payload", {}))
        for name in ("findings", "items"):
            if card.get(name):
                payload.setdefault(name, card[name])
        for key, value in (expect.payload or {}).items():
            if not _same(value, payload.get(key)):
                problems.append(f"payload.{key}: expected {value!r}, got {payload.get(key)!r}")
        summary = str(card.get("summary", ""))
        if expect.summary_contains is not None and expect.summary_contains not in summary:
            problems.append(
                f"summary: expected to contain {expect.summary_contains!r}, got {summary!r}"
            )
        if len(summary) >= MAX_SUMMARY:
            problems.append(f"summary has {len(summary)} characters (must be under {MAX_SUMMARY})")
    return problems


def run_examples(ruleset: RuleSet, engine: Engine | None = None) -> ExampleReport:
    """Run every active rule's examples through the compiled engine and the reference."""
    if engine is None:
        engine = Engine(ruleset)
    cards = CardRenderer(ruleset)
    report = ExampleReport()
    for rule in ruleset.rules:
        if rule.status != "active":
            if rule.examples:
                report.skipped_rules.append(rule.id)
            continue
        for index, example in enumerate(rule.examples):
            report.run += 1
            origin = ruleset.example_origins[(rule.id, index)]
            fact = example_fact(ruleset, rule, example)
            results = {
                "engine": engine.evaluate([fact]),
                "reference": evaluate(ruleset.rules, ruleset.parameters, [fact]),
            }
            if results["engine"] != results["reference"]:
                report.failures.append(
                    ExampleFailure(
                        origin,
                        rule.id,
                        example.name,
                        "the engine and the reference evaluator disagree: engine fired "
                        f"{results['engine'].fired}, reference fired {results['reference'].fired}",
                    )
                )
            for who, result in results.items():
                for problem in _check(cards, rule, example, result, fact):
                    report.failures.append(
                        ExampleFailure(origin, rule.id, example.name, f"{problem} ({who})")
                    )
    return report
