"""cds.pipeline: one call from FHIR input to CDS Hooks cards (what the front ends call).

    evaluator = Evaluator.from_rules_dir(Path("rules"))     # RuleSetError on bad rules
    result = evaluator.evaluate(EvaluationInput(hook="patient-view", resources=[...],
                                                as_of=date(2026, 11, 23)))
    result.cards, result.outcome, result.trace, result.fired

FHIR -> facts (cds.facts, data errors become `outcome`, never exceptions) -> engine
(cds.engine) -> cards (cds.cards). `Evaluator.evaluate` is thread-safe (the engine
serialises access to durable_rules; facts and cards are pure) and never answers a
failure with an empty card list: failures raise `EvaluationError`.

Deterministic mode (`EvaluationInput.deterministic` or `Evaluator(...,
deterministic_uuids=True)`): card and suggestion uuids are uuid5 of the rule set
version, a digest of the input and the topic, so reruns are byte-identical. A caller that
names its inputs (replay, explain) passes `EvaluationInput.uuid_seed` instead of the digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.cards import CardBuildError, CardContext, CardRenderer, build_cards
from cds.contracts.cards import Card
from cds.contracts.facts import Fact
from cds.contracts.hooks import HOOKS, EvaluationInput
from cds.contracts.outcome import data_outcome, issue_sort_key
from cds.engine import Engine, EngineError
from cds.facts import FactSet, ParameterError, Params, Selected, build_facts, read_params
from cds.fhir.drafts import draft_resources
from cds.fhir.profiles import ProfileError, Profiles, load_profiles
from cds.fhir.trace import Trace
from cds.rules import Firing, RuleSet, load_ruleset

__all__ = [
    "HOOKS",
    "EvaluationError",
    "EvaluationInput",
    "EvaluationResult",
    "Evaluator",
]


class EvaluationError(RuntimeError):
    """An evaluation failed: never to be read as "no cards".

    ``stage`` is where it failed (input, facts, engine, cards); ``rule_id`` names the rule
    when one is known.
    """

    def __init__(self, message: str, *, stage: str, rule_id: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.rule_id = rule_id


@dataclass
class EvaluationResult:
    """Cards (the contract's `Card`; `dump_cards` writes them), the OperationOutcome of
    data errors, the trace, what fired."""

    cards: list[Card]
    outcome: dict[str, Any] | None
    trace: Trace
    fired: list[str]
    facts: list[Fact] = field(default_factory=list)
    firings: list[Firing] = field(default_factory=list)
    emitted: list[dict[str, Any]] = field(default_factory=list)
    ruleset_version: str = ""
    #: The Patient the cards are about (the requested one, else the one evaluated).
    patient_id: str | None = None


def _digest(inp: EvaluationInput) -> str:
    """A digest of everything the answer depends on (deterministic uuids)."""

    def canon(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

    payload = {
        "hook": inp.hook,
        # order-insensitive: the same resources in another order give the same uuids
        "resources": sorted(canon(r) for r in inp.resources),
        "as_of": inp.as_of.isoformat(),
        "patient_id": inp.patient_id,
        # as the FHIR stage walks them (`cds.fhir.drafts`, the one reader of draft orders)
        "draft_orders": sorted(canon(r) for r in draft_resources(inp.draft_orders)),
        "selections": sorted(inp.selections),
    }
    return hashlib.sha256(canon(payload).encode("utf-8")).hexdigest()


def _outcome(factset: FactSet, inp: EvaluationInput) -> dict[str, Any] | None:
    """The OperationOutcome of the data errors: the FHIR stage's and the facts', with those
    a walk before the stage found (`EvaluationInput.issues`) sorted in."""
    if not inp.issues:
        return factset.outcome()
    return data_outcome(sorted([*factset.issues, *inp.issues], key=issue_sort_key))


def _patient_id(facts: FactSet, requested: str | None) -> str | None:
    if requested:
        return requested
    for used in facts.trace.used:
        if used.resource.startswith("Patient/"):
            return used.resource.split("/", 1)[1]
    return None


def _default_profiles() -> Profiles:
    """`load_profiles()`; a bad fhir_profiles folder is an EvaluationError (a deployment
    error the front ends report), never a failure of the first evaluation."""
    try:
        return load_profiles()
    except ProfileError as exc:
        raise EvaluationError(str(exc), stage="cards") from exc


class Evaluator:
    """A loaded rule set with its engine: evaluate FHIR input into cards."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        profiles: Profiles | None = None,
        deterministic_uuids: bool = False,
    ) -> None:
        self._ruleset = ruleset
        self._cards = CardRenderer(ruleset)
        # read once; a bad parameter fails every evaluation with what is wrong
        self._params: Params | ParameterError
        try:
            self._params = read_params(ruleset.parameters)
        except ParameterError as exc:
            self._params = exc.with_traceback(None)  # no frame (and self) kept alive
        self._profiles = profiles or _default_profiles()
        try:
            self._engine = Engine(ruleset)
        except EngineError as exc:
            raise EvaluationError(
                f"cannot load the rule set into the engine: {exc}", stage="engine"
            ) from exc
        self.deterministic_uuids = deterministic_uuids

    @classmethod
    def from_rules_dir(
        cls,
        path: Path | str | None = None,
        *,
        profiles: Profiles | None = None,
        deterministic_uuids: bool = False,
    ) -> Evaluator:
        """Load and compile `path` (default: $OSTEOHOOKS_RULES or the bundled rules/),
        its order keys checked against `profiles` (default: `load_profiles()`).

        Raises `cds.rules.RuleSetError` (every problem, file:line:col) on bad rules and
        `EvaluationError` on a bad fhir_profiles folder.
        """
        profiles = profiles or _default_profiles()
        ruleset = load_ruleset(path, order_keys=profiles.order_keys)
        return cls(ruleset, profiles=profiles, deterministic_uuids=deterministic_uuids)

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset

    @property
    def ruleset_version(self) -> str:
        """sha256 of the rule files (also in every card payload)."""
        return self._ruleset.version

    def close(self) -> None:
        """Free the engine's rule set (the Evaluator cannot evaluate afterwards)."""
        self._engine.close()

    def evaluate(self, inp: EvaluationInput) -> EvaluationResult:
        """FHIR input -> cards, outcome and trace. Raises EvaluationError on any failure."""
        if inp.hook not in HOOKS:
            raise EvaluationError(
                f"unknown hook {inp.hook!r}: expected one of {', '.join(HOOKS)}", stage="input"
            )
        order_hook = inp.hook != "patient-view"
        if isinstance(self._params, ParameterError):
            raise EvaluationError(
                f"rule parameters: {self._params}", stage="facts"
            ) from self._params
        try:
            factset = build_facts(
                list(inp.resources),
                params=self._params,
                as_of=inp.as_of,
                patient_id=inp.patient_id,
                draft_orders=Selected(inp.draft_orders, inp.selections) if order_hook else (),
                profiles=self._profiles,
            )
        except ParameterError as exc:
            raise EvaluationError(f"rule parameters: {exc}", stage="facts") from exc
        except Exception as exc:
            raise EvaluationError(
                f"building facts failed: {type(exc).__name__}: {exc}", stage="facts"
            ) from exc
        try:
            result = self._engine.evaluate(factset.facts)
        except EngineError as exc:
            raise EvaluationError(
                f"rule engine failed: {exc}", stage="engine", rule_id=exc.rule_id
            ) from exc
        except Exception as exc:
            raise EvaluationError(
                f"rule engine failed: {type(exc).__name__}: {exc}", stage="engine"
            ) from exc
        deterministic = inp.deterministic or self.deterministic_uuids
        patient_id = _patient_id(factset, inp.patient_id)
        context = CardContext(
            ruleset_version=self._ruleset.version,
            hook=inp.hook,
            patient_id=patient_id,
            as_of=inp.as_of,
            uuid_seed=inp.uuid_seed or (_digest(inp) if deterministic else None),
        )
        try:
            cards = build_cards(result.firings, self._cards, context, profiles=self._profiles)
        except CardBuildError as exc:
            raise EvaluationError(
                f"building cards failed: {exc}", stage="cards", rule_id=exc.rule_id
            ) from exc
        except Exception as exc:
            raise EvaluationError(
                f"building cards failed: {type(exc).__name__}: {exc}", stage="cards"
            ) from exc
        return EvaluationResult(
            cards=cards,
            outcome=_outcome(factset, inp),
            trace=factset.trace,
            fired=result.fired,
            facts=list(factset.facts),
            firings=list(result.firings),
            emitted=list(result.emitted),
            ruleset_version=self._ruleset.version,
            patient_id=patient_id,
        )
