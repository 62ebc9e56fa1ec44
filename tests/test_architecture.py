"""docs/architecture.md's import table is the code's: what each package of cds imports of
cds (at any level, functions included) is exactly what its row says it may import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CDS = ROOT / "cds"


def documented() -> dict[str, set[str]]:
    """package -> the cds packages its row of the table names in 'may import'."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(cds\.[a-z_]+)` \|.*\| ([^|]*) \|$", text, flags=re.MULTILINE)
    return {name: set(re.findall(r"`(cds\.[a-z_]+)", may)) for name, may in rows}


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def actual() -> dict[str, set[str]]:
    """package -> the other cds packages its modules import."""
    out: dict[str, set[str]] = {}
    for path in CDS.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if len(parts) < 2 or parts[1] == "__init__":
            continue
        package = f"cds.{parts[1]}"
        found = out.setdefault(package, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("cds.") and package_of(name) != package:
                    found.add(package_of(name))
    return out


def test_every_package_has_a_row() -> None:
    assert set(documented()) == set(actual())


def test_the_import_column_is_what_the_code_imports() -> None:
    doc, code = documented(), actual()
    for package in sorted(code):
        assert code[package] == doc.get(package), package
