"""The data folders the package ships: ``rules/`` and ``fhir_profiles/``.

Informaticists edit them at the repository root; ``cds/_data/rules`` and
``cds/_data/fhir_profiles`` are relative symbolic links to those folders, so a source tree,
an editable install and a ``git archive`` export all see the same files, and a wheel
(``pip wheel .``: setuptools follows the links, see ``[tool.setuptools.package-data]``)
carries copies of them. Which folder a run uses is decided in one place only:
:class:`cds.settings.DataFolders` (``OSTEOHOOKS_RULES``, ``OSTEOHOOKS_FHIR_PROFILES``,
defaulting to the two folders here).
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: The bundled rules folder (the repository's ``rules/`` in a checkout).
BUNDLED_RULES = (_HERE / "rules").resolve()
#: The bundled code lists and profiles (the repository's ``fhir_profiles/`` in a checkout).
BUNDLED_FHIR_PROFILES = (_HERE / "fhir_profiles").resolve()
