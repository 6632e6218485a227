"""Provider calls honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as enterprise networks need: a real forwarding and
CONNECT proxy on 127.0.0.1 counts what goes through it, in front of the fake providers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
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


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prism test CA")])
    ca = cert("prism test CA", ca_key, ca_name, ca_key, True)
    leaf = cert("127.0.0.1", key, ca_name, ca_key, False)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _TLSFront(socketserver.ThreadingTCPServer):
    """TLS in front of the (plain HTTP) fake providers: an https provider on 127.0.0.1."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cert: Path, key: Path, backend_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _TLSHandler)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.backend_port = backend_port


class _TLSHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _TLSFront = self.server  # type: ignore[assignment]
        try:
            tls = server.ctx.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        backend = socket.create_connection(("127.0.0.1", server.backend_port))
        t = threading.Thread(target=_pipe, args=(backend, tls), daemon=True)
        t.start()
        _pipe(tls, backend)
        t.join(timeout=10)
        backend.close()
        tls.close()


def test_https_proxy_tunnels_tls_providers_with_connect(fake: FakeProviders, proxy: _Proxy, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An https provider is reached through a CONNECT tunnel to its host:port, TLS end to end inside it (the
    provider's certificate checked against SSL_CERT_FILE, as behind a corporate CA)."""
    ca, cert, key = _tls_files(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    front = _TLSFront(cert, key, fake.port)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    port = front.server_address[1]

    async def run() -> None:
        client = ProviderClient(_catalog(fake, f"https://127.0.0.1:{port}/v1"), {**KEYS, "HTTPS_PROXY": proxy.url})
        try:
            status, body = await _call(client)
            assert status == 200 and b"echo: hi" in body
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        front.shutdown()
        front.server_close()
    assert proxy.seen == [("CONNECT", f"127.0.0.1:{port}")]
    assert fake.calls[-1].path == "/v1/chat/completions"  # through the proxy and the TLS front to the fake


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
