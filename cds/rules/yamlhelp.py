"""YAML syntax errors in plain words: what is wrong, where, and the likely fix.

ruamel.yaml reports a syntax error as parser states ("expected <block end>, but found
'<block mapping start>'"). `explain` turns the common ones into a sentence an author can
act on, with the position of the mistake itself (the opening quote that is never closed,
the key without a colon), not where the parser gave up. Anything not recognised keeps
ruamel's words plus a general hint, so no error is ever hidden.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ruamel.yaml.error import MarkedYAMLError


@dataclass(frozen=True)
class Explained:
    line: int  # 1-based
    col: int  # 1-based
    message: str  # without the "YAML: " prefix


_CANNOT_START = re.compile(r"found character '(.+)' that cannot start any token")
_KEY_AT = re.compile(r"^(\s*)(?:-\s+)?([^\s:#][^:#]*?):(?:\s|$)")


def _lines(text: str) -> list[str]:
    return text.splitlines() or [""]


def _line(text: str, line: int) -> str:
    lines = _lines(text)
    return lines[line - 1] if 1 <= line <= len(lines) else ""


def _previous_content_line(text: str, line: int) -> tuple[int, str]:
    for number in range(line - 1, 0, -1):
        content = _line(text, number)
        if content.strip() and not content.lstrip().startswith("#"):
            return number, content
    return 0, ""


def _value_start(content: str) -> str:
    match = _KEY_AT.match(content)
    return content[match.end() :].lstrip() if match else content.lstrip()


def explain(exc: MarkedYAMLError, text: str) -> Explained:
    """The plain-words form of one ruamel.yaml syntax error in `text`."""
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    pmark, cmark = exc.problem_mark, exc.context_mark
    pline, pcol = (pmark.line + 1, pmark.column + 1) if pmark is not None else (1, 1)
    cline, ccol = (cmark.line + 1, cmark.column + 1) if cmark is not None else (pline, pcol)
    here = _line(text, pline)

    if "duplicate key" in problem:
        words = problem.replace("found duplicate key", "duplicate key")
        return Explained(
            pline, pcol, f"{words}. Fix: a key appears once per mapping; remove or rename one"
        )

    cannot_start = _CANNOT_START.search(problem)
    if cannot_start:
        char = cannot_start.group(1)
        if char == "\\t":
            return Explained(
                pline,
                pcol,
                "a tab character: YAML indents with spaces only. Fix: replace the tab "
                "with spaces (2 per level, like the lines around it)",
            )
        return Explained(
            pline,
            pcol,
            f"a value cannot start with '{char}' in YAML. Fix: put the whole text in "
            f'quotes: "{_value_start(here)}"',
        )

    if problem.startswith("found undefined alias"):
        return Explained(
            pline,
            pcol,
            "a value starting with '*' is read as a YAML alias. Fix: put the whole text in "
            f'quotes: "{_value_start(here)}"',
        )

    if "while scanning a quoted scalar" in context:
        quote = _line(text, cline)[ccol - 1 : ccol] or '"'
        return Explained(
            cline,
            ccol,
            f"the quote {quote} opened here is never closed. Fix: end the text with {quote} "
            "on the same line (or the line where the text ends)",
        )

    for opener, closer, what, example in (
        ("[", "]", "sequence", "[a, b]"),
        ("{", "}", "mapping", "{field: tbs, le: 1.2}"),
    ):
        if f"while parsing a flow {what}" in context:
            return Explained(
                cline,
                ccol,
                f"the '{opener}' opened here is not closed with '{closer}' before line {pline}. "
                f"Fix: close it where its items end, e.g. {example}",
            )

    if "could not find expected ':'" in problem:
        key = _line(text, cline).strip()
        return Explained(
            cline,
            ccol,
            f"'{key}' has no ':' after its key. Fix: write 'key: value' (a colon, then a "
            "space), or join it to the line above if it continues that text",
        )

    if problem == "mapping values are not allowed here":
        match = _KEY_AT.match(here)
        if match and pcol > match.end(2) + 1:  # a second ': ' after the line's own key
            return Explained(
                pline,
                pcol,
                f"': ' inside the value of '{match.group(2).strip()}' starts a new key. "
                f'Fix: put the value in quotes: {match.group(2).strip()}: "'
                f'{_value_start(here)}"',
            )
        indent = len(here) - len(here.lstrip())
        number, above = _previous_content_line(text, pline)
        return Explained(
            pline,
            indent + 1,
            f"indentation: this key is indented more than the one on line {number} "
            f"('{above.strip()}'), which has a value already. Fix: indent it like the "
            "other keys of its mapping",
        )

    if "expected <block end>" in problem:
        found = problem.rpartition("but found ")[2].strip("'")
        indent = len(here) - len(here.lstrip())
        if found == "<block mapping start>" or found == "<block sequence start>":
            return Explained(
                pline,
                indent + 1,
                f"indentation: this line is indented by {indent} spaces, which matches no "
                "level above it. Fix: indent it exactly like the keys (or list items) it "
                "belongs with",
            )
        if found == "-":
            number, above = _previous_content_line(text, pline)
            stripped = above.strip()
            if stripped.startswith("-") and not stripped.startswith("- "):
                return Explained(
                    number,
                    len(above) - len(above.lstrip()) + 1,
                    f"'{stripped}': a list item needs a space after '-'. Fix: '- {stripped[1:]}'",
                )
            return Explained(
                pline,
                indent + 1,
                "a list item ('- ') where the indentation says a key belongs. Fix: indent "
                "the '-' like the other items of its list, or give the key above a ':'",
            )
        if found in ("]", "}"):
            return Explained(
                pline,
                pcol,
                f"a '{found}' without its opening bracket. Fix: remove it or add the opening one",
            )
        value = _value_start(here)
        if value.startswith("{"):
            return Explained(
                pline,
                pcol,
                "a value starting with '{' is read as a YAML mapping (templates too). "
                f'Fix: put the whole text in quotes: "{value}"',
            )
        if value[:1] in ("'", '"'):
            return Explained(
                pline,
                pcol,
                "text continues after the closing quote. Fix: put the whole text inside the quotes",
            )
        return Explained(
            pline,
            pcol,
            f"unexpected {found} here. Fix: check this line's indentation and quote a "
            "value that contains ': ', ' #', or starts with { [ ' \" * & ! | > % @",
        )

    if "expected the node content, but found '-'" in problem:
        return Explained(
            pline,
            pcol,
            "a list item ('- ') inside [ ] or { }. Fix: write the list either in brackets "
            "[a, b] or as lines starting with '- ', not both",
        )

    words = problem or context or "invalid YAML"
    if context and problem:
        words = f"{problem} ({context})"
    return Explained(
        pline,
        pcol,
        f"{words}. Fix: check the indentation (spaces only, the same for keys of one "
        "mapping) and quote any text that contains ': ' or starts with a special character",
    )
