"""Configuration: the OSTEOHOOKS_* variables of the contract and the optional settings file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from cds.settings import MAX_BODY_BYTES, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OSTEOHOOKS_"):
            monkeypatch.delenv(name)


def test_defaults_are_secure_and_local() -> None:
    settings = Settings()
    assert settings.auth == "jwt"
    assert settings.database_url == "sqlite:///./osteohooks.db"
    assert settings.fhir_server_allowlist == []
    assert settings.cors_origins == []
    assert settings.max_body_bytes == MAX_BODY_BYTES == 5 * 1024 * 1024
    assert (settings.rules / "classification.yaml").is_file()  # the bundled rules


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OSTEOHOOKS_AUTH", "none")
    monkeypatch.setenv(
        "OSTEOHOOKS_FHIR_SERVER_ALLOWLIST", "https://a.example/fhir, https://b.example/"
    )
    monkeypatch.setenv("OSTEOHOOKS_CORS_ORIGINS", "https://ehr.example")
    monkeypatch.setenv("OSTEOHOOKS_TRUSTED_TENANTS", "t1,t2")
    monkeypatch.setenv("OSTEOHOOKS_BASE_URL", "https://cds.example.org/")
    monkeypatch.setenv("OSTEOHOOKS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("OSTEOHOOKS_RULES", str(tmp_path))
    monkeypatch.setenv("OSTEOHOOKS_AS_OF", "2026-11-23")
    settings = Settings()
    assert settings.auth == "none"
    assert settings.fhir_server_allowlist == ["https://a.example/fhir", "https://b.example/"]
    assert settings.cors_origins == ["https://ehr.example"]
    assert settings.trusted_tenants == ["t1", "t2"]
    assert settings.base_url == "https://cds.example.org"
    assert settings.database_url.startswith("postgresql")
    assert settings.rules == tmp_path
    assert settings.as_of == date(2026, 11, 23)


def test_auth_must_be_jwt_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTEOHOOKS_AUTH", "off")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_settings_file_with_environment_taking_precedence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"osteohooks{suffix}"
    if suffix == ".json":
        path.write_text(
            json.dumps({"auth": "none", "fhir_timeout": 1.5, "cors_origins": ["https://x.example"]})
        )
    else:
        path.write_text('auth = "none"\nfhir_timeout = 1.5\ncors_origins = ["https://x.example"]\n')
    monkeypatch.setenv("OSTEOHOOKS_SETTINGS_FILE", str(path))
    settings = Settings()
    assert settings.auth == "none"
    assert settings.fhir_timeout == 1.5
    assert settings.cors_origins == ["https://x.example"]
    monkeypatch.setenv("OSTEOHOOKS_FHIR_TIMEOUT", "2.5")
    assert Settings().fhir_timeout == 2.5
    assert Settings(fhir_timeout=0.5).fhir_timeout == 0.5  # cds serve options win


def test_missing_settings_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OSTEOHOOKS_SETTINGS_FILE", str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match="no such file"):
        Settings()
