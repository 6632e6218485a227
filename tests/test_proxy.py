"""Provider calls honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as enterprise networks need: a real forwarding and
CONNECT proxy on 127.0.0.1 counts what goes through it, in front of the fake providers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import uvicorn
from fakes import FakeProviders, run_fake_providers
from test_gateway import KEYS, RunningGateway

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import build_catalog
from mcp_prism.errors import ConfigError
from mcp_prism.gateway import build_gateway
from mcp_prism.providers.client import ProviderClient, proxies_from_env
from mcp_prism.providers.wire import WireError


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str]] = []  # (method, target) of every request that came through
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class _ProxyHandler(socketserver.BaseRequestHandler):
    """HTTP/1.1 proxy: absolute-form requests are forwarded (one per connection), CONNECT opens a tunnel."""

    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ")
        self.server.seen.append((method, target))  # type: ignore[attr-defined]
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            t = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            t.start()
            if rest:
                upstream.sendall(rest)
            _pipe(client, upstream)
            t.join(timeout=10)
            upstream.close()
            return
        assert target.startswith("http://"), target
        hostport, _, path = target[7:].partition("/")
        host, _, port = hostport.partition(":")
        headers = [h for h in lines[1:] if not h.lower().startswith(("proxy-", "connection:"))]
        length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
        while len(rest) < length:
            rest += client.recv(65536)
        upstream = socket.create_connection((host, int(port or 80)))
        upstream.sendall(f"{method} /{path} HTTP/1.1\r\n".encode() + "\r\n".join([*headers, "Connection: close"])
                         .encode() + b"\r\n\r\n" + rest)
        _pipe(upstream, client)
        upstream.close()


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


def _catalog(fake: FakeProviders, openai_url: str | None = None) -> Any:
    return build_catalog(shipped_catalog_data(), {"providers": {
        "openai": {"base_url": openai_url or fake.openai_base_url}}})


def test_proxy_settings_follow_curls_conventions() -> None:
    assert proxies_from_env({}) == {}
    env = {"HTTPS_PROXY": "proxy.corp:3128", "http_proxy": "http://p:8080", "HTTP_PROXY": "http://ignored:1",
           "NO_PROXY": "localhost,.internal"}
    assert proxies_from_env(env) == {"http": "http://p:8080", "https": "http://proxy.corp:3128",
                                     "no": "localhost,.internal"}
    assert proxies_from_env({"ALL_PROXY": "http://a:1"}) == {"http": "http://a:1", "https": "http://a:1"}
    with pytest.raises(ConfigError, match="HTTPS_PROXY must be"):
        proxies_from_env({"HTTPS_PROXY": "ftp://x:1"})


async def _call(client: ProviderClient, model: str = "gpt-5-nano") -> tuple[int, bytes]:
    body = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % model.encode()
    resp = await client.send(client.request("openai", model, body, stream=False))
    try:
        return resp.status_code, await resp.aread()
    finally:
        await resp.aclose()


def test_http_proxy_carries_provider_calls_and_no_proxy_bypasses_it(fake: FakeProviders, proxy: _Proxy) -> None:
    async def run() -> None:
        env = {**KEYS, "HTTP_PROXY": proxy.url}
        client = ProviderClient(_catalog(fake), env)
        try:
            status, body = await _call(client)
            assert status == 200 and b"echo: hi" in body
            status, _ = await _call(client)
            assert status == 200
        finally:
            await client.aclose()
        assert proxy.seen == [("POST", f"{fake.openai_base_url}/chat/completions")] * 2
        for no_proxy in ("127.0.0.1", f"127.0.0.1:{fake.port}", "*"):
            bypass = ProviderClient(_catalog(fake), {**env, "NO_PROXY": no_proxy})
            try:
                assert (await _call(bypass))[0] == 200
            finally:
                await bypass.aclose()
        assert len(proxy.seen) == 2  # NO_PROXY: straight to the provider
        direct = ProviderClient(_catalog(fake), KEYS)
        try:
            assert (await _call(direct))[0] == 200
        finally:
            await direct.aclose()
        assert len(proxy.seen) == 2

    asyncio.run(run())


def test_https_proxy_tunnels_tls_providers_with_connect(fake: FakeProviders, proxy: _Proxy) -> None:
    """An https provider is reached through a CONNECT tunnel to its host:port (TLS then fails here because the
    fake behind the tunnel speaks plain HTTP: the tunnel, not TLS, is what this checks)."""
    async def run() -> None:
        client = ProviderClient(_catalog(fake, f"https://127.0.0.1:{fake.port}/v1"),
                                {**KEYS, "HTTPS_PROXY": proxy.url})
        try:
            with pytest.raises(WireError, match="cannot reach the provider"):
                await _call(client)
        finally:
            await client.aclose()
        assert proxy.seen == [("CONNECT", f"127.0.0.1:{fake.port}")]

    asyncio.run(run())


def test_gateway_requests_go_through_the_proxy(fake: FakeProviders, proxy: _Proxy, tmp_path: Any) -> None:
    class Proxied(RunningGateway):  # the same gateway, its process environment naming a proxy
        def __init__(self, home: Any, fake: FakeProviders) -> None:
            super().__init__(home, fake)
            self.app = build_gateway(self.settings, env={**KEYS, "HTTP_PROXY": proxy.url}, flush_interval=0.05)
            self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                                        access_log=False, lifespan="on"))
            self.thread = threading.Thread(target=self.server.run, daemon=True)

    with Proxied(tmp_path / "gw", fake) as gw:
        client: openai.OpenAI = gw.openai()
        assert client.responses.create(model="gpt-5-nano", input="via proxy").output_text == "echo: via proxy"
        chat = client.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}])
        assert chat.choices[0].message.content == "echo: x"
    assert ("POST", f"{fake.openai_base_url}/responses") in proxy.seen
    assert ("POST", f"{fake.base_url}/v1/messages") in proxy.seen
