"""Service configuration: the `OSTEOHOOKS_*` environment variables of the public contract.

Values come, highest priority first, from: keyword arguments (the `cds serve` options),
environment variables, then an optional settings file named by `OSTEOHOOKS_SETTINGS_FILE`
(JSON, or TOML when the name ends in `.toml`, with the field names below as keys, e.g.
`{"auth": "jwt", "base_url": "https://cds.example.org"}`), then the defaults.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cds._data import BUNDLED_FHIR_PROFILES, BUNDLED_RULES

SETTINGS_FILE_ENV = "OSTEOHOOKS_SETTINGS_FILE"
MAX_BODY_BYTES = 5 * 1024 * 1024


def _split_list(value: Any) -> Any:
    """Accept `a,b` (environment form) as well as a JSON/TOML list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class DataFolders(BaseSettings):
    """The two data folders, the one owner of where they are (`OSTEOHOOKS_RULES`,
    `OSTEOHOOKS_FHIR_PROFILES`, else the folders shipped in the package, see `cds._data`).

    Library code that is given no folder asks :func:`data_folders`; the service reads the
    same fields from :class:`Settings`, which extends this class.
    """

    model_config = SettingsConfigDict(
        env_prefix="OSTEOHOOKS_", extra="ignore", validate_default=True, frozen=True
    )

    rules: Path = Field(BUNDLED_RULES, description="rules folder")
    fhir_profiles: Path = Field(
        BUNDLED_FHIR_PROFILES, description="code lists and profiles folder (fhir_profiles/)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 (pydantic passes it by name; not used)
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(SETTINGS_FILE_ENV)
        if path:
            if not Path(path).is_file():
                raise ValueError(f"{SETTINGS_FILE_ENV}={path}: no such file")
            if path.endswith(".toml"):
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                sources.append(JsonConfigSettingsSource(settings_cls, json_file=path))
        return tuple(sources)


def data_folders() -> DataFolders:
    """The rules and fhir_profiles folders of this run (environment, settings file, bundled)."""
    return DataFolders()


class Settings(DataFolders):
    """Everything `cds serve` and `cds.api.create_app` read."""

    auth: Literal["jwt", "none"] = Field(
        "jwt", description="jwt (default): signed JWT on every call; none: development only"
    )
    trusted_issuers: Path | None = Field(
        None, description="JSON file mapping each trusted iss to its keys (jwks, jwks_file, jku)"
    )
    trusted_tenants: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated tenant ids; when set, the JWT tenant claim must be one",
    )
    base_url: str | None = Field(
        None, description="public base URL of the service (JWT aud is <base_url>/cds-services/...)"
    )
    fhir_server_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated URL prefixes a request's fhirServer may start with",
    )
    database_url: str = Field("sqlite:///./osteohooks.db", description="SQLAlchemy URL")
    audit_spool: Path | None = Field(
        None,
        description="SQLite file where audit rows wait while the store fails (default: "
        "beside an SQLite database, else ./osteohooks-audit-spool.sqlite)",
    )
    as_of: date | None = Field(None, description="fixed 'today' (ISO date) for reproducibility")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS (* for any)"
    )
    reload_rules: bool = Field(False, description="poll the rules folder and reload on change")
    reload_interval: float = Field(2.0, gt=0, description="seconds between rule-folder polls")
    max_body_bytes: int = Field(MAX_BODY_BYTES, gt=0, description="request bodies above: 413")
    fhir_timeout: float = Field(3.0, gt=0, description="seconds per FHIR request (prefetch)")
    fhir_max_pages: int = Field(10, ge=1, description="pages followed per prefetch search")
    fhir_deadline_ms: int = Field(
        2000, gt=0, description="total ms for all fallback fetches of one call (pages, Devices)"
    )
    fhir_max_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="largest FHIR answer read (bytes, while streaming)"
    )
    eval_threads: int = Field(
        4, ge=1, description="worker threads per process for evaluation and big JSON bodies"
    )
    process_body_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="hook call bodies above this many bytes are parsed and evaluated in a "
        "worker process (the event loop and the GIL stay free meanwhile)",
    )
    eval_processes: int = Field(
        1,
        ge=0,
        description="worker processes per service process for bodies above "
        "process_body_bytes (started with the service; 0: such bodies use threads)",
    )
    jwt_leeway: int = Field(30, ge=0, le=300, description="clock skew allowed on exp/iat, s")
    jwt_max_lifetime: int = Field(
        300, ge=1, le=3600, description="longest JWT lifetime (exp - iat) accepted, s"
    )
    jwks_cache_ttl: int = Field(300, ge=1, description="seconds a fetched jku JWK Set is kept")
    log_level: str = Field("INFO", description="root log level (JSON logs on stderr)")

    @field_validator("trusted_tenants", "fhir_server_allowlist", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None
