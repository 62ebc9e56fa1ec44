"""FHIR server URLs: normalised, then checked against the allowlist before any request.

Every URL the service would send a token to (`fhirServer`, the searches and reads built on
it, pagination `next` links, `Device/{id}` reads) goes through `checked(url, allowlist)`:

- parsed and normalised by httpx (scheme and host lower case, `.`/`..` segments removed,
  the default port of the scheme made explicit for comparison); percent-encoded dots
  (`%2e`) are decoded first so that `%2e%2e` is the `..` a server would read;
- refused when ambiguous: user info, a fragment, an encoded slash or backslash (`%2f`,
  `%5c`), a literal backslash, a `..` that climbs above the root, a scheme other than
  http(s);
- allowed only when scheme, host and port equal an allowlist entry's and the entry's path
  segments are a prefix of the URL's (`https://ehr/r4` allows `https://ehr/r4/Patient/1`,
  never `https://ehr/r4x` nor `https://ehr/r4/../private`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_AMBIGUOUS = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


class UrlRefused(ValueError):
    """The URL is not one the service sends a request (and a token) to; `str` says why
    without repeating the URL's path (which may hold a patient id)."""


@dataclass(frozen=True)
class Origin:
    """A normalised http(s) URL split for comparison: scheme, host, port, path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]
    url: httpx.URL

    def within(self, prefix: Origin) -> bool:
        return (self.scheme, self.host, self.port) == (
            prefix.scheme,
            prefix.host,
            prefix.port,
        ) and self.segments[: len(prefix.segments)] == prefix.segments


def parse(url: str) -> Origin:
    """Normalise `url`; UrlRefused when it is not an unambiguous absolute http(s) URL."""
    if "\\" in url or any(ord(c) < 0x21 for c in url):
        raise UrlRefused("it holds a backslash, a space or a control character")
    if _AMBIGUOUS.search(url):
        raise UrlRefused("it holds an encoded slash, backslash or NUL (%2F, %5C, %00)")
    path_end = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    raw = _ENCODED_DOT.sub(".", url[:path_end]) + url[path_end:]
    try:
        parsed = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UrlRefused(f"it is not a valid URL ({type(exc).__name__})") from None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UrlRefused("only http and https URLs are fetched")
    if not parsed.host:
        raise UrlRefused("it names no host")
    if parsed.userinfo:
        raise UrlRefused("it holds user information (user:password@)")
    if parsed.fragment:
        raise UrlRefused("it holds a fragment (#...)")
    path = parsed.path
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:  # httpx removes dot segments; one left climbed above the root
        raise UrlRefused("its path climbs above the server root")
    port = parsed.port or _DEFAULT_PORTS[scheme]
    normal = parsed.copy_with(scheme=scheme, host=parsed.host.lower())
    if parsed.port == _DEFAULT_PORTS[scheme]:
        normal = normal.copy_with(port=None)
    return Origin(scheme, parsed.host.lower(), port, tuple(segments), normal)


def prefixes(allowlist: Sequence[str]) -> list[Origin]:
    """The allowlist entries that parse (a bad entry allows nothing)."""
    out = []
    for entry in allowlist:
        try:
            out.append(parse(entry.strip()))
        except UrlRefused:
            continue
    return out


def checked(url: str, allowlist: Sequence[str]) -> httpx.URL:
    """The normalised URL when it lies within an allowlist entry; else UrlRefused."""
    origin = parse(url)
    if not any(origin.within(prefix) for prefix in prefixes(allowlist)):
        raise UrlRefused(
            f"{origin.scheme}://{origin.host}:{origin.port} and that path are not within "
            "any OSTEOHOOKS_FHIR_SERVER_ALLOWLIST entry"
        )
    return origin.url


def allowed(url: str | None, allowlist: Sequence[str]) -> bool:
    """True when `url` is within an allowlist entry (see `checked`)."""
    if not url:
        return False
    try:
        checked(url, allowlist)
    except UrlRefused:
        return False
    return True


def join(base: httpx.URL, relative: str) -> str:
    """`relative` (a query like `Observation?patient=1`, or a link) resolved against the
    server base, which is treated as a folder (`.../r4` + `Patient/1` is `.../r4/Patient/1`)."""
    folder = base if base.path.endswith("/") else base.copy_with(path=base.path + "/")
    return str(folder.join(relative))
