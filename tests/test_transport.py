"""FastHTTP1Transport against raw asyncio servers the tests control byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from conftest import free_port

from mcp_prism.providers.transport import _MAX_BUFFER, FastHTTP1Transport

pytestmark = pytest.mark.anyio


@dataclass
class Req:
    method: str
    target: str
    headers: dict[str, str]
    raw_head: bytes
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Req | None:
    """One request off the wire, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return Req(method, target, headers, head, body)


def response(body: bytes, status: int = 200, headers: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} OK", f"Content-Length: {len(body)}", "Content-Type: text/plain", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A raw HTTP server on 127.0.0.1 counting connections; every handler task is reaped on exit."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = free_port()
        self.connections = 0
        self.requests: list[Req] = []
        self.eof_seen = asyncio.Event()  # a client closed a connection the server was waiting on
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        await self._server.wait_closed()


async def echo_loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
    """Keep-alive server: answers each request with its method, target and body."""
    while (req := await read_request(reader)) is not None:
        srv.requests.append(req)
        writer.write(response(b"%s %s %s" % (req.method.encode(), req.target.encode(), req.body)))
        await writer.drain()


def client(srv: Server, transport: FastHTTP1Transport | None = None, timeout: float = 2.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or FastHTTP1Transport(), base_url=srv.url,
                             timeout=httpx.Timeout(timeout))


# ---------------------------------------------------------------- framing
async def test_content_length_response() -> None:
    async with Server(echo_loop) as srv, client(srv) as c:
        r = await c.post("/v1/chat", content=b'{"a": 1}')
        assert r.status_code == 200
        assert r.content == b'POST /v1/chat {"a": 1}'
        assert r.headers["content-type"] == "text/plain"
        assert r.http_version == "HTTP/1.1"


async def test_content_length_response_streamed() -> None:
    async with Server(echo_loop) as srv, client(srv) as c:
        req = c.build_request("POST", "/s", content=b"xyz")
        r = await c.send(req, stream=True)
        try:
            body = b"".join([part async for part in r.aiter_raw()])
        finally:
            await r.aclose()
        assert body == b"POST /s xyz"


async def chunked_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
    while (req := await read_request(reader)) is not None:
        srv.requests.append(req)
        writer.write(CHUNKED_HEAD)
        for part in (b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"):
            writer.write(chunk(part))
            await writer.drain()
            await asyncio.sleep(0.005)  # separate TCP segments, so the client sees them one by one
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def test_chunked_response() -> None:
    async with Server(chunked_handler) as srv, client(srv) as c:
        r = await c.post("/x", content=b"{}")
        assert r.content == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
        req = c.build_request("POST", "/x", content=b"{}")
        streamed = await c.send(req, stream=True)
        try:
            parts = [part async for part in streamed.aiter_raw()]
        finally:
            await streamed.aclose()
        assert b"".join(parts) == r.content
        assert len(parts) >= 2  # delivered as it arrived, not buffered to the end
        assert srv.connections == 1


# ---------------------------------------------------------------- keep-alive
async def test_keep_alive_reuses_one_connection() -> None:
    async with Server(echo_loop) as srv, client(srv) as c:
        for i in range(20):
            r = await c.post(f"/n/{i}", content=b"%d" % i)
            assert r.content == b"POST /n/%d %d" % (i, i)
        assert srv.connections == 1


async def test_idle_connection_closed_by_server_is_replaced() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        req = await read_request(reader)
        assert req is not None
        writer.write(response(b"ok"))  # no "Connection: close": the client keeps it idle
        await writer.drain()

    transport = FastHTTP1Transport()
    async with Server(one_then_close) as srv, client(srv, transport) as c:
        assert (await c.post("/", content=b"1")).content == b"ok"
        await asyncio.sleep(0.05)  # the client sees the FIN while the connection is idle
        assert (await c.post("/", content=b"2")).content == b"ok"
        assert srv.connections == 2
        # The dead connection must not linger in the transport's bookkeeping.
        assert len(transport._open) == 1


async def test_stale_connection_is_retried_once() -> None:
    """The race the retry exists for: the server drops a kept-alive connection just as a request goes out."""

    async def answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        first = await read_request(reader)
        assert first is not None
        srv.requests.append(first)
        writer.write(response(b"first"))
        await writer.drain()
        second = await read_request(reader)
        assert second is not None
        srv.requests.append(second)
        # closed without answering

    async with Server(answer_once_then_drop) as srv, client(srv) as c:
        assert (await c.post("/", content=b"a")).content == b"first"
        assert (await c.post("/", content=b"b")).content == b"first"  # transparently, on a new connection
        assert srv.connections == 2
        assert [r.body for r in srv.requests] == [b"a", b"b", b"b"]  # "b" dropped once, then sent again


async def test_fresh_connection_dropped_is_not_retried() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        await read_request(reader)

    async with Server(drop) as srv, client(srv) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post("/", content=b"a")
        assert srv.connections == 1


async def test_connection_close_response_is_not_reused() -> None:
    async def close_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        assert await read_request(reader) is not None
        writer.write(response(b"bye", headers=("Connection: close",)))
        await writer.drain()
        # The server leaves the socket open: the client must close it on its own.
        if await reader.read() == b"":
            srv.eof_seen.set()

    transport = FastHTTP1Transport()
    async with Server(close_header) as srv, client(srv, transport) as c:
        assert (await c.get("/")).content == b"bye"
        await asyncio.wait_for(srv.eof_seen.wait(), 1)
        assert (await c.get("/")).content == b"bye"
        assert srv.connections == 2
        assert not transport._idle.get(("http", "127.0.0.1", srv.port))


# ---------------------------------------------------------------- failures
async def test_response_cut_mid_chunked_body() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        assert await read_request(reader) is not None
        writer.write(CHUNKED_HEAD + chunk(b"data: one\n\n") + b"20\r\npartial")
        await writer.drain()

    async with Server(cut) as srv, client(srv) as c:
        req = c.build_request("POST", "/", content=b"{}")
        r = await c.send(req, stream=True)
        got = []
        with pytest.raises(httpx.RemoteProtocolError):
            async for part in r.aiter_raw():
                got.append(part)
        await r.aclose()
        assert b"".join(got).startswith(b"data: one\n\n")
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post("/", content=b"{}")


async def test_server_never_answers_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        assert await read_request(reader) is not None
        if await reader.read() == b"":  # waits until the client gives up
            srv.eof_seen.set()

    async with Server(silent) as srv, client(srv, timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/", content=b"{}")
        assert 0.25 < time.monotonic() - t0 < 1.0
        await asyncio.wait_for(srv.eof_seen.wait(), 1)  # the timed-out connection was closed


async def test_stalled_body_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        assert await read_request(reader) is not None
        writer.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
        await writer.drain()
        await reader.read()

    async with Server(stall) as srv, client(srv, timeout=0.3) as c:
        r = await c.send(c.build_request("POST", "/", content=b"{}"), stream=True)
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async for _ in r.aiter_raw():
                pass
        await r.aclose()
        assert 0.25 < time.monotonic() - t0 < 1.0


async def test_connection_refused() -> None:
    async with httpx.AsyncClient(transport=FastHTTP1Transport(), timeout=1) as c:
        with pytest.raises(httpx.ConnectError):
            await c.post(f"http://127.0.0.1:{free_port()}/", content=b"{}")


async def test_abandoned_stream_closes_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        req = await read_request(reader)
        assert req is not None
        if req.target == "/ok":
            writer.write(response(b"fine"))
            await writer.drain()
            await reader.read()
            return
        writer.write(CHUNKED_HEAD + chunk(b"data: token\n\n"))
        await writer.drain()
        if await reader.read() == b"":  # the client hung up mid-generation: the upstream can stop
            srv.eof_seen.set()

    async with Server(endless) as srv, client(srv) as c:
        r = await c.send(c.build_request("POST", "/gen", content=b"{}"), stream=True)
        async for part in r.aiter_raw():
            assert part == b"data: token\n\n"
            break
        await r.aclose()
        await asyncio.wait_for(srv.eof_seen.wait(), 1)
        assert (await c.get("/ok")).content == b"fine"
        assert srv.connections == 2


async def test_large_body_streamed_intact_with_backpressure() -> None:
    size = 5 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for i in range(0, size, 65536):
                writer.write(payload[i:i + 65536])
                await writer.drain()

    transport = FastHTTP1Transport()
    async with Server(big) as srv, client(srv, transport) as c:
        r = await c.send(c.build_request("GET", "/big"), stream=True)
        (conn,) = transport._open
        # Consume nothing yet: the transport must stop reading instead of buffering all 5 MB.
        for _ in range(100):
            if conn._paused:
                break
            await asyncio.sleep(0.01)
        assert conn._paused
        assert conn._buffered <= _MAX_BUFFER + 256 * 1024  # at most one socket read beyond the limit
        digest, n = hashlib.sha256(), 0
        async for part in r.aiter_raw():
            digest.update(part)
            n += len(part)
        await r.aclose()
        assert n == size
        assert digest.digest() == hashlib.sha256(payload).digest()
        assert not conn._paused
        # Reading resumed properly: the connection is reusable for the next request.
        assert len((await c.get("/big")).content) == size
        assert srv.connections == 1


async def test_concurrent_requests_get_their_own_responses() -> None:
    async def echo_id(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while (req := await read_request(reader)) is not None:
            rid = req.headers["x-request-id"]
            await asyncio.sleep(0.001 * (int(rid) % 7))  # answer out of order across connections
            writer.write(response(f"{rid}:{req.body.decode()}".encode()))
            await writer.drain()

    async with Server(echo_id) as srv, client(srv) as c:
        async def one(i: int) -> None:
            r = await c.post("/", content=f"body-{i}".encode(), headers={"x-request-id": str(i)})
            assert r.text == f"{i}:body-{i}"

        await asyncio.gather(*(one(i) for i in range(50)))
        assert srv.connections <= 50
        # Afterwards the idle pool serves a second wave without opening new connections.
        before = srv.connections
        await asyncio.gather(*(one(i) for i in range(before)))
        assert srv.connections == before


# ---------------------------------------------------------------- the request on the wire
async def test_request_arrives_exactly_as_sent() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "h\xc3\xa9"}]}'
    async with Server(echo_loop) as srv, client(srv) as c:
        r = await c.post("/v1/chat/completions?api-version=2024-10-21&x=a%20b", content=body,
                         headers={"authorization": "Bearer sk-test", "x-custom": "v1"})
        assert r.status_code == 200
        (req,) = srv.requests
        assert req.method == "POST"
        assert req.target == "/v1/chat/completions?api-version=2024-10-21&x=a%20b"
        assert req.headers["content-length"] == str(len(body))
        assert req.headers["host"] == f"127.0.0.1:{srv.port}"
        assert req.headers["authorization"] == "Bearer sk-test"
        assert req.headers["x-custom"] == "v1"
        assert "transfer-encoding" not in req.headers
        assert req.body == body


async def test_get_without_body() -> None:
    async with Server(echo_loop) as srv, client(srv) as c:
        r = await c.get("/v1/models?limit=5")
        assert r.content == b"GET /v1/models?limit=5 "
        r = await c.post("/after", content=b"next")  # nothing stray was left on the connection
        assert r.content == b"POST /after next"
        get, _ = srv.requests
        assert get.method == "GET"
        assert get.body == b""
        assert "content-length" not in get.headers
        assert "transfer-encoding" not in get.headers
        assert srv.connections == 1
