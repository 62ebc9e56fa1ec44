"""Rule-file fixtures shared with tests/rules (load, errors)."""

from tests.rules.conftest import errors, load

__all__ = ["errors", "load"]
