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
`jwks_cache_ttl` seconds; an unknown `kid` refetches at most every 30 seconds. A failed
fetch is remembered: the URL is not fetched again for 5 s, then 10, 20 ... up to 5 minutes
(`JKU_BACKOFF_*`), so unauthenticated callers cannot make the service hammer a key server;
concurrent verifications of one URL share a single fetch.

Claims: `exp`, `iat` (and `nbf` when present) must be finite JSON numbers (no NaN or
Infinity, which Python's JSON reader accepts), `exp - iat` at most `max_lifetime` seconds
(`OSTEOHOOKS_JWT_MAX_LIFETIME`, default 300: the 5 minutes the specification recommends),
`jti` a non-empty string of at most 256 characters, `tenant` (when tenants are configured)
a string on the list. A jti is accepted once: the service passes its store
(`cds.store.Store.claim_jti`, shared by every worker and instance on one database); a
verifier built without one keeps an in-process cache (one process only).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger("osteohooks.auth")

ALLOWED_ALGORITHMS = frozenset({"ES384", "RS384", "ES256", "RS256", "PS256", "PS384", "PS512"})
JWKS_MAX_BYTES = 256 * 1024
KID_REFETCH_SECONDS = 30.0
REPLAY_CACHE_MAX = 100_000
MAX_LIFETIME_SECONDS = 300
JTI_MAX_LENGTH = 256
JKU_BACKOFF_FIRST = 5.0
JKU_BACKOFF_MAX = 300.0
KEY_CACHE_MAX = 256  # verification keys built from JWKs, kept for reuse


class AuthError(Exception):
    """A token failed a check. The message is for the operator's log, not the caller;
    `reason` is a short fixed label (the `osteohooks_auth_failures_total` metric)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ReplayGuard(Protocol):
    """Accepts each jti key once until it expires (`cds.store.Store` implements it)."""

    def claim_jti(self, key: str, expires: float, now: float) -> bool:
        """True when `key` was not seen (or its earlier use expired): it is now taken."""
        ...


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
    """jti values seen in this process, each kept until its token expires; bounded in
    size. For a verifier used alone; the service uses its store (all workers)."""

    def __init__(self, max_entries: int = REPLAY_CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def claim_jti(self, key: str, expires: float, now: float) -> bool:
        if self.seen(key, now):
            return False
        self.add(key, expires, now)
        return True

    def seen(self, key: str, now: float) -> bool:
        expiry = self._expiry.get(key)
        return expiry is not None and expiry >= now

    def add(self, key: str, expires: float, now: float) -> None:
        while self._heap and (self._heap[0][0] < now or len(self._expiry) >= self.max_entries):
            old_expiry, old_key = heapq.heappop(self._heap)
            if self._expiry.get(old_key) == old_expiry:
                del self._expiry[old_key]
        self._expiry[key] = expires
        heapq.heappush(self._heap, (expires, key))

    def __len__(self) -> int:
        return len(self._expiry)


class _JwksCache:
    """JWK Sets fetched from allowlisted jku URLs, with a TTL; failures back off."""

    def __init__(self, ttl: float, client_factory: Callable[[], httpx.AsyncClient]) -> None:
        self.ttl = ttl
        self._client_factory = client_factory
        self._sets: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._failed: dict[str, tuple[float, float, str]] = {}  # url -> (until, backoff, why)
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(self, url: str, now: float, *, refresh: bool = False) -> list[dict[str, Any]]:
        cached = self._usable(url, now, refresh)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:  # one fetch per URL at a time; the others reuse its outcome
            cached = self._usable(url, now, refresh)
            if cached is not None:
                return cached
            try:
                keys = await self._fetch(url)
            except AuthError as exc:
                backoff = self._failed.get(url, (0.0, JKU_BACKOFF_FIRST / 2, ""))[1]
                backoff = min(JKU_BACKOFF_MAX, backoff * 2)
                self._failed[url] = (now + backoff, backoff, str(exc))
                log.warning(
                    "jku fetch failed; not retried for %g s: %s",
                    backoff,
                    exc,
                    extra={"event": "jku-failed"},
                )
                raise
            self._failed.pop(url, None)
            self._sets[url] = (now, keys)
            return keys

    def _usable(self, url: str, now: float, refresh: bool) -> list[dict[str, Any]] | None:
        cached = self._sets.get(url)
        fresh = cached is not None and now - cached[0] < self.ttl
        if cached is not None and fresh and (not refresh or now - cached[0] < KID_REFETCH_SECONDS):
            return cached[1]
        failed = self._failed.get(url)
        if failed is not None and now < failed[0]:
            if cached is not None and fresh:
                return cached[1]  # a refresh failed recently: the cached set still serves
            raise AuthError(f"{failed[2]} (backing off until the retry time)", "jku-backoff")
        return None

    async def _fetch(self, url: str) -> list[dict[str, Any]]:
        async with self._client_factory() as client:
            try:
                response = await client.get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                raise AuthError(f"jku {url}: fetch failed: {type(exc).__name__}", "jku") from None
        if response.status_code != 200 or len(response.content) > JWKS_MAX_BYTES:
            raise AuthError(f"jku {url}: HTTP {response.status_code}", "jku")
        try:
            return _jwk_list(response.json(), f"jku {url}")
        except (ValueError, ConfigError) as exc:
            raise AuthError(str(exc), "jku") from None


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
        max_lifetime: float = MAX_LIFETIME_SECONDS,
        jwks_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        client_factory: Callable[[], httpx.AsyncClient] = _default_client,
        replay: ReplayGuard | None = None,
    ) -> None:
        self.issuers = dict(issuers)
        self.tenants = frozenset(tenants)
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.clock = clock
        self.replay: ReplayGuard = replay if replay is not None else _ReplayCache()
        self.jwks = _JwksCache(jwks_ttl, client_factory)
        self._keys: dict[tuple[int, str], tuple[dict[str, Any], jwt.PyJWK]] = {}

    async def verify(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        try:  # header and claims read once (the signature is checked below)
            parts = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"not a JWT: {type(exc).__name__}", "malformed") from None
        header: dict[str, Any] = parts["header"]
        unverified: dict[str, Any] = parts["payload"]
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"algorithm {alg!r} not allowed", "algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid in the header", "key")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise AuthError(f"typ {typ!r} is not JWT", "malformed")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(f"issuer {iss!r} not trusted", "issuer")

        jwk = await self._find_key(issuer, kid, header.get("jku"))
        if jwk.get("kty") == "oct" or jwk.get("use", "sig") != "sig":
            raise AuthError(f"key {kid!r} is not a signature key", "key")
        if jwk.get("alg", alg) != alg:
            raise AuthError(f"key {kid!r} is for {jwk.get('alg')}, token says {alg}", "key")
        try:
            key = self._key(jwk, alg)
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
            raise AuthError(f"signature check failed: {type(exc).__name__}", "signature") from None
        now = self.clock()
        digest, expires = self._check_claims(claims, audiences, now)
        if isinstance(self.replay, _ReplayCache):
            fresh = self.replay.claim_jti(digest, expires, now)
        else:  # a database round trip: off the event loop
            fresh = await anyio.to_thread.run_sync(self.replay.claim_jti, digest, expires, now)
        if not fresh:
            raise AuthError("jti already used (replay)", "replay")
        return claims

    def _key(self, jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
        """The verification key of `jwk` for `alg`, built once per key set entry (building
        one parses the JWK and loads the public key: ~0.15 ms, a twentieth of a call's
        ES384 check). Keyed by the entry's identity: a refetched set brings new entries."""
        cache_key = (id(jwk), alg)
        found = self._keys.get(cache_key)
        if found is not None and found[0] is jwk:
            return found[1]
        key = jwt.PyJWK(jwk, algorithm=alg)
        if len(self._keys) >= KEY_CACHE_MAX:  # sets were refetched many times: start over
            self._keys.clear()
        self._keys[cache_key] = (jwk, key)  # the entry is held: its id is not reused
        return key

    def _check_claims(
        self, claims: Mapping[str, Any], audiences: Sequence[str], now: float
    ) -> tuple[str, float]:
        """Every claim check but the replay; returns the jti key and when it expires."""
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in audiences for a in auds):
            raise AuthError(f"aud {aud!r} is not this endpoint ({audiences[0]})", "audience")
        exp = _finite(claims.get("exp"))
        if exp is None:
            raise AuthError("exp missing or not a finite number", "claims")
        if now >= exp + self.leeway:
            raise AuthError("exp past", "expired")
        iat = _finite(claims.get("iat"))
        if iat is None:
            raise AuthError("iat missing or not a finite number", "claims")
        if iat > now + self.leeway:
            raise AuthError("iat in the future", "claims")
        if exp - iat > self.max_lifetime:
            raise AuthError(
                f"lifetime exp - iat = {exp - iat:.0f} s is over the {self.max_lifetime:g} s "
                "allowed (OSTEOHOOKS_JWT_MAX_LIFETIME)",
                "lifetime",
            )
        if "nbf" in claims:
            nbf = _finite(claims["nbf"])
            if nbf is None:
                raise AuthError("nbf not a finite number", "claims")
            if nbf > now + self.leeway:
                raise AuthError("nbf in the future", "claims")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > JTI_MAX_LENGTH:
            raise AuthError(f"jti missing or not a string of 1-{JTI_MAX_LENGTH}", "claims")
        if self.tenants:
            tenant = claims.get("tenant")
            if not isinstance(tenant, str) or tenant not in self.tenants:
                raise AuthError("tenant missing, not a string or not trusted", "tenant")
        return jti_key(str(claims["iss"]), jti), exp + self.leeway

    async def _find_key(self, issuer: TrustedIssuer, kid: str, jku: Any) -> dict[str, Any]:
        if issuer.keys is not None:
            for key in issuer.keys:
                if key.get("kid") == kid:
                    return key
            raise AuthError(f"kid {kid!r} not in the keys of {issuer.iss}", "key")
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku:
                raise AuthError(f"jku {jku!r} not allowed for {issuer.iss}", "jku")
            urls = [str(jku)]
        else:
            urls = issuer.jku
        now = self.clock()
        for url in urls:
            for refresh in (False, True):
                for key in await self.jwks.keys(url, now, refresh=refresh):
                    if key.get("kid") == kid:
                        return key
        raise AuthError(f"kid {kid!r} not in the JWK Set of {issuer.iss}", "key")


def jti_key(iss: str, jti: str) -> str:
    """The replay store's key for one token: a digest of issuer and jti (fixed length)."""
    return hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for NaN, +-Infinity, bools, text, huge ints."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token
