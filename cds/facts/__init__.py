"""cds.facts: FHIR input -> the flat facts the rules read (see docs/architecture.md).

from cds.facts import build_facts, FactSet
fs = build_facts(resources, params=ruleset.parameters, as_of=date(2026, 11, 23))
"""

from cds.facts.build import (
    REQUIRED_PARAMS,
    FactSet,
    ParameterError,
    Params,
    build_facts,
    read_params,
)
from cds.fhir.drafts import Selected  # build_facts' draft_orders for order-select

__all__ = [
    "REQUIRED_PARAMS",
    "FactSet",
    "ParameterError",
    "Params",
    "Selected",
    "build_facts",
    "read_params",
]
