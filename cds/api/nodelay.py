"""uvicorn's HTTP protocol with TCP_NODELAY set on every accepted connection.

With `--workers N` uvicorn hands each worker the listening socket; asyncio sets
TCP_NODELAY on accepted sockets only when it can see they are TCP, which it cannot for a
socket rebuilt from the inherited descriptor (upstream Kludex/uvicorn #3149). Without it
Nagle's algorithm and delayed ACKs hold each keep-alive response ~40 ms. `cds serve` names
this class as uvicorn's `http` protocol (for one worker too: setting the option twice is
harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

try:  # the protocol uvicorn's "auto" would pick: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - depends on the installed extras
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

PROTOCOL = "cds.api.nodelay:NoDelayProtocol"


class NoDelayProtocol(_Base):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
