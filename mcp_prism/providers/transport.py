"""A lean HTTP/1.1 keep-alive transport for httpx, on asyncio and httptools.

httpx's default transport (httpcore + h11 + anyio) spends ~0.9 ms of CPU per request on this machine
(benchmarks/bench_gateway.py), more than the gateway's whole budget. Plain-http upstreams (vLLM,
Ollama, anything on the local network) go through this transport instead; https providers keep
httpcore with HTTP/2. It speaks the subset a provider API needs: one request per connection at a
time, Content-Length or chunked responses, streamed bodies, per-phase timeouts, keep-alive reuse.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

_MAX_BUFFER = 1 << 20  # pause reading the socket when the consumer falls this far behind


class _Connection(asyncio.Protocol):
    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._headers_done = False
        self._keep_alive = False
        self.complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes with no request outstanding: the peer is confused; drop it
            self._fail(httpx.RemoteProtocolError("unexpected data from the server"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response from the server: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._parser is not None and not self.complete:
            self._fail(httpx.RemoteProtocolError("server closed the connection before the response ended"))

    # ------------------------------------------------------------ httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()  # only meaningful before the message completes
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _MAX_BUFFER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # ------------------------------------------------------------ helpers
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        if self.transport is not None:
            self.transport.close()
        self._wake()

    async def _wait(self, timeout: float | None, exc_type: type[httpx.TimeoutException],
                    request: httpx.Request) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._waiter
            else:
                async with asyncio.timeout(timeout):
                    await self._waiter
        except TimeoutError:
            self._fail(exc_type("timed out waiting for the server", request=request))
        finally:
            self._waiter = None

    def start(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._headers, self._headers_done, self.complete, self._error = 0, [], False, False, None
        self._chunks.clear()
        self._buffered = 0

    async def response_head(self, request: httpx.Request,
                            timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        while not self._headers_done and self._error is None:
            await self._wait(timeout, httpx.ReadTimeout, request)
        if self._error is not None:
            raise self._error
        return self._status, self._headers

    async def body(self, request: httpx.Request, timeout: float | None) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                # Everything that arrived since the last read goes out as one piece: a provider's
                # stream often lands many small chunks in one socket read, and each piece handed on
                # costs a pass through the gateway's relay.
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
            if self._error is not None:
                raise self._error
            if self.complete:
                return
            await self._wait(timeout, httpx.ReadTimeout, request)

    @property
    def reusable(self) -> bool:
        return self.complete and self._keep_alive and not self.lost and self._error is None


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: FastHTTP1Transport, conn: _Connection, request: httpx.Request,
                 timeout: float | None) -> None:
        self._transport, self._conn, self._request, self._timeout = transport, conn, request, timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._conn.body(self._request, self._timeout):
            yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A response not read to the end leaves the connection mid-message: close it, which is also
        # how an abandoned stream cancels the upstream generation.
        self._transport._release(self._conn)


class FastHTTP1Transport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_idle_per_host: int = 256, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host
        self._ssl = ssl_context
        self._open: set[_Connection] = set()

    async def _connect(self, key: tuple[str, str, int], request: httpx.Request, timeout: float | None) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost:
                return conn
            self._open.discard(conn)  # closed by the server while idle: forget it, or `_open` grows forever
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            ctx = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(key), host, port, ssl=ctx,
                                                       server_hostname=host if ctx else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}", request=request) from None
        except OSError as e:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {e.strerror or e}", request=request) from None
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.reusable:
            idle = self._idle.setdefault(conn.key, [])
            if len(idle) < self._max_idle:
                conn._parser = None
                idle.append(conn)
                return
        self._open.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = request.read()  # provider requests are small JSON documents, always in memory
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        for name, value in request.headers.raw:
            head.append(b"%s: %s\r\n" % (name, value))
        if "content-length" not in request.headers and request.method in ("POST", "PUT", "PATCH"):
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        payload = b"".join(head) + body
        for attempt in (0, 1):
            conn = await self._connect(key, request, timeouts.get("connect"))
            reused = attempt == 0 and conn.transport is not None and conn in self._open and conn.complete
            conn.start()
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                status, headers = await conn.response_head(request, timeouts.get("read"))
            except httpx.RemoteProtocolError:
                self._open.discard(conn)
                # A kept-alive connection the server closed while idle: retry once on a fresh one.
                if reused and not conn._headers:
                    continue
                raise
            except BaseException:
                self._release(conn)
                raise
            return httpx.Response(status, headers=headers, stream=_Body(self, conn, request, timeouts.get("read")),
                                  extensions={"http_version": b"HTTP/1.1"})
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        self._open.clear()
        self._idle.clear()
