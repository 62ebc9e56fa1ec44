"""The package imports and exposes its console script."""

import cds
from cds.cli import app


def test_version_is_a_release_string() -> None:
    assert cds.__version__.count(".") == 2


def test_cli_registers_the_rules_group() -> None:
    names = {group.name for group in app.registered_groups}
    assert "rules" in names
