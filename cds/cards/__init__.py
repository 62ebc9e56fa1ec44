"""cds.cards: rule firings -> CDS Hooks 2.0.1 cards (one per topic), see docs/architecture.md.

Public API::

    from cds.cards import build_cards, CardContext, CardBuildError
    renderer = CardRenderer(ruleset)     # keep it as long as the rule set (plans cached)
    cards = build_cards(result.firings, renderer, CardContext(ruleset_version=ruleset.version,
                        hook="patient-view", patient_id="123", as_of=date(2026, 11, 23)))
    from cds.cards import contract_problems   # HL7 cds-resp-1..7 + the card contract
"""

from cds.cards.build import (
    OVERRIDE_REASONS,
    OVERRIDE_SYSTEM,
    CardBuildError,
    CardContext,
    build_cards,
)
from cds.cards.invariants import contract_problems, hl7_problems
from cds.cards.render import CardPlan, CardRenderer
from cds.contracts.cards import EXTENSION_KEY

__all__ = [
    "EXTENSION_KEY",
    "OVERRIDE_REASONS",
    "OVERRIDE_SYSTEM",
    "CardBuildError",
    "CardContext",
    "CardPlan",
    "CardRenderer",
    "build_cards",
    "contract_problems",
    "hl7_problems",
]
