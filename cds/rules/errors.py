"""Rule errors: each one says where (file:line:col) and what to do."""

from __future__ import annotations

import difflib
import re
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


def _snake(word: str) -> str:
    """'lowestT' / 'Lowest-T' / 'lowest t' -> 'lowest_t' (how people misspell names)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", word.strip())
    return re.sub(r"[\s\-]+", "_", spaced).lower()


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate the author most likely meant, or None. In this order:

    - the same name in another spelling: case, camelCase, '-' or spaces for '_'
      ('lowestT' -> 'lowest_t', 'TBS' -> 'tbs');
    - a candidate the word starts with, at a word boundary or of at least 4 characters
      ('tbs_score' -> 'tbs', 'age_years' -> 'age', 'lowest_tscore' -> 'lowest_t'), the
      longest such; or one that starts with the word (at least 4 characters:
      'last_dxa' -> 'last_dxa_date');
    - an abbreviation, word by word: each word of the name starts a word of the
      candidate and has its letters in order ('lab-vitd' -> 'lab-25-oh-vitamin-d');
    - otherwise difflib's closest match (typos: 'lowset_t' -> 'lowest_t').
    """
    pool = sorted(set(candidates))
    if not pool or word in pool:
        return None
    normal = _snake(word)
    by_normal: dict[str, str] = {}
    for candidate in pool:
        by_normal.setdefault(_snake(candidate), candidate)
    if normal in by_normal:
        return by_normal[normal]
    within = [
        n
        for n in by_normal
        if len(n) < len(normal) and normal.startswith(n) and (len(n) >= 4 or normal[len(n)] == "_")
    ]
    if within:
        return by_normal[max(within, key=lambda n: (len(n), n))]
    if len(normal) >= 4:
        longer = [n for n in by_normal if n.startswith(normal)]
        if longer:
            return by_normal[min(longer, key=lambda n: (len(n), n))]
    words = normal.split("_")
    if len(words) >= 2:  # an abbreviation, word by word ('lab-vitd', 'chg_pct')
        abbreviated = [n for n in by_normal if _abbreviates(words, n.split("_"))]
        if abbreviated:
            return by_normal[min(abbreviated, key=lambda n: (len(n), n))]
    matches = difflib.get_close_matches(normal, sorted(by_normal), n=1, cutoff=0.6)
    return by_normal[matches[0]] if matches else None


def _in_order(short: str, long: str) -> bool:
    letters = iter(long)
    return all(char in letters for char in short)


def _abbreviates(words: list[str], names: list[str]) -> bool:
    """Each word starts a later name of the candidate and has its letters in order there
    ('vitd' abbreviates 'vitamin_d'), the first word the first name."""
    start = 0
    for index, word in enumerate(words):
        found = None
        for k in range(start, len(names)):
            if names[k][:1] == word[:1] and _in_order(word, "".join(names[k:])):
                found = k
                break
            if index == 0:
                return False
        if found is None:
            return False
        start = found + 1
    return True


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''."""
    pool = set(candidates)
    synonym = OPERATOR_SYNONYMS.get(word)
    match = synonym if synonym in pool else closest(word, pool)
    return f" (did you mean '{match}'?)" if match else ""
