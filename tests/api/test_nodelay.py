"""`cds.api.nodelay`: the protocol `cds serve` runs writes each response in one piece."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cds.api.nodelay import PROTOCOL, Coalescing
from tests.api.fhir_server import free_port


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def test_writes_within_one_loop_turn_leave_as_one_and_close_sends_what_waits() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes], bool, str]:
        real = _Transport()
        transport = Coalescing(real)  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(memoryview(b"body"))
        before = list(real.writes)  # nothing yet: the turn has not ended
        await asyncio.sleep(0)
        one_turn = list(real.writes)
        transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        transport.flush()  # uvicorn completed the response: written now, not at turn end
        flushed = len(real.writes)
        transport.write(b"last words")
        transport.close()  # before the turn ends: written first, then closed
        assert flushed == 2
        return before, one_turn, real.writes, real.closed, transport.get_extra_info("peer")

    before, one_turn, after_close, closed, info = asyncio.run(scenario())
    assert before == []
    assert one_turn == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert after_close == [
        b"HTTP/1.1 200 OK\r\n\r\nbody",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"last words",
    ]
    assert closed
    assert info == "info:peer"


async def _whole(_request: Request) -> Response:
    return Response(b'{"cards":[]}' * 100, media_type="application/json")


async def _streamed(_request: Request) -> StreamingResponse:
    async def chunks() -> Any:
        for index in range(3):
            yield f"chunk {index};".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


def test_the_service_protocol_answers_whole_and_streamed_responses() -> None:
    """Through uvicorn with the protocol `cds serve` names: keep-alive calls, a streamed
    answer (chunk by chunk, across loop turns) and a closing one all arrive complete."""
    port = free_port()
    app = Starlette(routes=[Route("/whole", _whole), Route("/streamed", _streamed)])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=PROTOCOL, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            reader = conn.makefile("rb")
            for _ in range(3):
                conn.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
                assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
                headers = _headers(reader)
                assert reader.read(int(headers["content-length"])) == b'{"cards":[]}' * 100
            conn.sendall(b"GET /streamed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
            assert _headers(reader)["transfer-encoding"] == "chunked"
            assert reader.read() == (
                b"8\r\nchunk 0;\r\n8\r\nchunk 1;\r\n8\r\nchunk 2;\r\n0\r\n\r\n"
            )  # then the server closed the connection
    finally:
        server.should_exit = True
        thread.join(10)


def _headers(reader: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        out[name.strip().lower()] = value.strip()
    return out
