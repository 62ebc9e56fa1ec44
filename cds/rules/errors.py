"""Rule errors: each one says where (file:line:col) and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class RuleError:
    """One problem in a rule file; lines and columns count from 1."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class RuleSetError(Exception):
    """The rule set was rejected; `.errors` holds every problem found, sorted."""

    def __init__(self, errors: Iterable[RuleError]) -> None:
        self.errors: list[RuleError] = sorted(set(errors))
        super().__init__("\n".join(str(e) for e in self.errors))


#: Operator spellings people bring from other languages.
OPERATOR_SYNONYMS = {
    "lte": "le",
    "gte": "ge",
    "neq": "ne",
    "equals": "eq",
    "is": "eq",
    "==": "eq",
    "!=": "ne",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
    "one_of": "in",
    "exist": "exists",
    "present": "exists",
    "absent": "missing",
    "and": "all",
    "or": "any",
}


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate the author most likely meant, or None.

    A candidate that is a prefix of the word, or that the word is a prefix of (at least
    4 characters), wins ('lowest_tscore' -> 'lowest_t', 'last_dxa' -> 'last_dxa_date');
    otherwise difflib's closest match.
    """
    pool = sorted(set(candidates))
    if not pool:
        return None
    if len(word) >= 4:
        prefixed = [c for c in pool if len(c) >= 4 and (word.startswith(c) or c.startswith(word))]
        if prefixed:
            return min(prefixed, key=lambda c: (abs(len(c) - len(word)), c))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''."""
    pool = set(candidates)
    synonym = OPERATOR_SYNONYMS.get(word)
    match = synonym if synonym in pool else closest(word, pool)
    return f" (did you mean '{match}'?)" if match else ""
