"""cds.rules: YAML rule loading, validation, compilation, reference evaluation, tooling.

Public API::

    from cds.rules import load_ruleset, RuleSet, RuleSetError, RuleError
    ruleset = load_ruleset(Path("rules"))   # raises RuleSetError (all errors, sorted)
    ruleset.parameters                      # dict[str, int | float | str | bool]
    ruleset.rules, ruleset.derived_facts, ruleset.evidence, ruleset.version, ruleset.compiled
"""

from cds.rules.errors import RuleError, RuleSetError
from cds.rules.result import EngineResult, Firing
from cds.rules.ruleset import RuleSet, default_rules_dir, load_ruleset

__all__ = [
    "EngineResult",
    "Firing",
    "RuleError",
    "RuleSet",
    "RuleSetError",
    "default_rules_dir",
    "load_ruleset",
]
