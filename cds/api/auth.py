"""CDS Hooks client authentication: signed JWTs (CDS Hooks 2.0.1 "Trusting CDS Clients").

`JwtVerifier.verify(token, audiences)` returns the claims or raises `AuthError` whose
reason is for the service log only (at debug level, never with the token): the HTTP answer
is always the same 401 OperationOutcome (`cds.api.errors.unauthorized`).

Trusted issuers file (`OSTEOHOOKS_TRUSTED_ISSUERS`), one entry per `iss`:

    {"https://ehr.example.com/": {"jwks": {"keys": [...]}}}           # keys inline
    {"https://ehr.example.com/": {"jwks_file": "ehr-jwks.json"}}     # relative to this file
    {"https://ehr.example.com/": {"jku": ["https://ehr.example.com/jwks"]}}

With `jku`, a token's `jku` header must be one of the listed URLs (without one, the
listed URLs are tried in order); sets are fetched with httpx and cached for
`jwks_cache_ttl` seconds; an unknown `kid` refetches at most every 30 seconds.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger("osteohooks.auth")

ALLOWED_ALGORITHMS = frozenset({"ES384", "RS384", "ES256", "RS256", "PS256", "PS384", "PS512"})
JWKS_MAX_BYTES = 256 * 1024
KID_REFETCH_SECONDS = 30.0
REPLAY_CACHE_MAX = 100_000


class AuthError(Exception):
    """A token failed a check. The message is for the operator's log, not the caller."""


class ConfigError(ValueError):
    """The trusted-issuers configuration cannot be used (raised at start-up)."""


class _IssuerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jwks: dict[str, Any] | None = None
    jwks_file: str | None = None
    jku: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> _IssuerConfig:
        given = [k for k in ("jwks", "jwks_file", "jku") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'jwks', 'jwks_file' or 'jku'")
        return self


@dataclass
class TrustedIssuer:
    iss: str
    keys: list[dict[str, Any]] | None = None  # inline or file: fixed at start-up
    jku: list[str] = field(default_factory=list)


def _jwk_list(jwks: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ConfigError(f"{where}: a JWK Set is an object {{'keys': [...]}}")
    keys = [k for k in jwks["keys"] if isinstance(k, dict)]
    for index, key in enumerate(keys):
        if key.get("kty") == "oct":
            raise ConfigError(f"{where}: keys[{index}] is symmetric (kty oct): not allowed")
    return keys


def load_trusted_issuers(path: Path) -> dict[str, TrustedIssuer]:
    """Read and check the trusted-issuers file; errors name the file and the issuer."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the trusted issuers file: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected an object mapping each trusted 'iss' to its keys")
    issuers: dict[str, TrustedIssuer] = {}
    for iss, entry in raw.items():
        where = f"{path}: issuer {iss!r}"
        try:
            cfg = _IssuerConfig.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {exc.errors()[0]['msg']}") from None
        if cfg.jwks is not None:
            issuers[iss] = TrustedIssuer(iss, keys=_jwk_list(cfg.jwks, where))
        elif cfg.jwks_file is not None:
            key_path = (path.parent / cfg.jwks_file).resolve()
            try:
                jwks = json.loads(key_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{where}: jwks_file {key_path}: {exc}") from exc
            issuers[iss] = TrustedIssuer(iss, keys=_jwk_list(jwks, f"{where} ({key_path})"))
        else:
            urls = cfg.jku or []
            for url in urls:
                if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
                    raise ConfigError(f"{where}: jku {url!r} must be https")
            issuers[iss] = TrustedIssuer(iss, jku=list(urls))
    return issuers


class _ReplayCache:
    """jti values seen, each kept until its token expires; bounded in size."""

    def __init__(self, max_entries: int = REPLAY_CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def seen(self, key: tuple[str, str], now: float) -> bool:
        expiry = self._expiry.get(key)
        return expiry is not None and expiry >= now

    def add(self, key: tuple[str, str], expires: float, now: float) -> None:
        while self._heap and (self._heap[0][0] < now or len(self._expiry) >= self.max_entries):
            old_expiry, old_key = heapq.heappop(self._heap)
            if self._expiry.get(old_key) == old_expiry:
                del self._expiry[old_key]
        self._expiry[key] = expires
        heapq.heappush(self._heap, (expires, key))

    def __len__(self) -> int:
        return len(self._expiry)


class _JwksCache:
    """JWK Sets fetched from allowlisted jku URLs, with a TTL."""

    def __init__(self, ttl: float, client_factory: Callable[[], httpx.AsyncClient]) -> None:
        self.ttl = ttl
        self._client_factory = client_factory
        self._sets: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def keys(self, url: str, now: float, *, refresh: bool = False) -> list[dict[str, Any]]:
        cached = self._sets.get(url)
        fresh = cached is not None and now - cached[0] < self.ttl
        if cached and fresh and (not refresh or now - cached[0] < KID_REFETCH_SECONDS):
            return cached[1]
        async with self._client_factory() as client:
            try:
                response = await client.get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                raise AuthError(f"jku {url}: fetch failed: {type(exc).__name__}") from None
        if response.status_code != 200 or len(response.content) > JWKS_MAX_BYTES:
            raise AuthError(f"jku {url}: HTTP {response.status_code}")
        try:
            keys = _jwk_list(response.json(), f"jku {url}")
        except (ValueError, ConfigError) as exc:
            raise AuthError(str(exc)) from None
        self._sets[url] = (now, keys)
        return keys


def _default_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(3.0), follow_redirects=False)


class JwtVerifier:
    """Checks a CDS Client's bearer JWT: issuer, keys, algorithm, claims, replay."""

    def __init__(
        self,
        issuers: Mapping[str, TrustedIssuer],
        *,
        tenants: Sequence[str] = (),
        leeway: float = 30.0,
        jwks_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        client_factory: Callable[[], httpx.AsyncClient] = _default_client,
    ) -> None:
        self.issuers = dict(issuers)
        self.tenants = frozenset(tenants)
        self.leeway = leeway
        self.clock = clock
        self.replay = _ReplayCache()
        self.jwks = _JwksCache(jwks_ttl, client_factory)

    async def verify(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"not a JWT: {type(exc).__name__}") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"algorithm {alg!r} not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid in the header")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise AuthError(f"typ {typ!r} is not JWT")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(f"issuer {iss!r} not trusted")

        jwk = await self._find_key(issuer, kid, header.get("jku"))
        if jwk.get("kty") == "oct" or jwk.get("use", "sig") != "sig":
            raise AuthError(f"key {kid!r} is not a signature key")
        if jwk.get("alg", alg) != alg:
            raise AuthError(f"key {kid!r} is for {jwk.get('alg')}, token says {alg}")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError(f"signature check failed: {type(exc).__name__}") from None
        self._check_claims(claims, audiences)
        return claims

    def _check_claims(self, claims: Mapping[str, Any], audiences: Sequence[str]) -> None:
        now = self.clock()
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in audiences for a in auds):
            raise AuthError(f"aud {aud!r} is not this endpoint ({audiences[0]})")
        exp = _number(claims.get("exp"))
        if exp is None or now >= exp + self.leeway:
            raise AuthError("exp missing or past")
        iat = _number(claims.get("iat"))
        if iat is None or iat > now + self.leeway:
            raise AuthError("iat missing or in the future")
        nbf = claims.get("nbf")
        if nbf is not None and ((n := _number(nbf)) is None or n > now + self.leeway):
            raise AuthError("nbf in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti missing")
        if self.tenants and claims.get("tenant") not in self.tenants:
            raise AuthError("tenant not trusted")
        key = (str(claims["iss"]), jti)
        if self.replay.seen(key, now):
            raise AuthError("jti already used (replay)")
        self.replay.add(key, exp + self.leeway, now)

    async def _find_key(self, issuer: TrustedIssuer, kid: str, jku: Any) -> dict[str, Any]:
        if issuer.keys is not None:
            for key in issuer.keys:
                if key.get("kid") == kid:
                    return key
            raise AuthError(f"kid {kid!r} not in the keys of {issuer.iss}")
        if jku is not None:
            if jku not in issuer.jku:
                raise AuthError(f"jku {jku!r} not allowed for {issuer.iss}")
            urls = [str(jku)]
        else:
            urls = issuer.jku
        now = self.clock()
        for url in urls:
            for refresh in (False, True):
                for key in await self.jwks.keys(url, now, refresh=refresh):
                    if key.get("kid") == kid:
                        return key
        raise AuthError(f"kid {kid!r} not in the JWK Set of {issuer.iss}")


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token
