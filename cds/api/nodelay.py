"""uvicorn's HTTP protocol with TCP_NODELAY set on every accepted connection, and each
response written to the socket at once (one write, not one for the head and one for the
body).

With `--workers N` uvicorn hands each worker the listening socket; asyncio sets
TCP_NODELAY on accepted sockets only when it can see they are TCP, which it cannot for a
socket rebuilt from the inherited descriptor (upstream Kludex/uvicorn #3149). Without it
Nagle's algorithm and delayed ACKs hold each keep-alive response ~40 ms. `cds serve` names
this class as uvicorn's `http` protocol (for one worker too: setting the option twice is
harmless).

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and its body with `http.response.body`: with TCP_NODELAY those are
two segments and two `send` calls, and the first wakes the client to read half an answer.
`Coalescing` holds what is written and writes it as one piece when uvicorn completes the
response (`on_response_complete`), before the connection closes, or at the end of the
event-loop turn, whichever comes first: a whole response (every answer of this service)
leaves in one `send` at once, never behind another call's evaluation; a streamed one
still leaves chunk by chunk, each within the turn that wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

try:  # the protocol uvicorn's "auto" would pick: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - depends on the installed extras
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

PROTOCOL = "cds.api.nodelay:NoDelayProtocol"


class Coalescing:
    """A transport whose writes reach the socket as one write at `flush`, at `close` or at
    the end of the event-loop turn they were made in; everything else is the wrapped
    transport's."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write what is held now (one write)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class NoDelayProtocol(_Base):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._coalescing = Coalescing(transport)
        super().connection_made(self._coalescing)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self._coalescing.flush()  # the whole response, now, in one write
        super().on_response_complete()
