"""Provider clients: one pooled httpx client that knows each provider's endpoint and auth.

The gateway and the experiment runner post already-encoded bodies through `ProviderClient.send`
and read the answer as a stream (non-streaming answers are just short streams). Keys are read
from the environment variable the catalog names and live only in request headers: never logged,
never echoed (an upstream error body is passed on, but our request headers never are).

OpenAI models are called with Chat Completions, or with the Responses API (`/responses`) when the caller
says the body is in that format (`fmt="responses"`: codex models, Responses clients passed through).
HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY from the environment are honoured per origin, as curl does.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from mcp_prism.core.catalog import Catalog, ProviderSpec
from mcp_prism.errors import ConfigError
from mcp_prism.providers.transport import FastHTTP1Transport
from mcp_prism.providers.wire import WireError

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)


@dataclass(frozen=True, slots=True)
class Endpoint:
    provider: ProviderSpec
    key: str | None


def proxies_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """{"http": url, "https": url, "no": hosts} from HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY (the
    lower-case names win, as in curl); a proxy given without a scheme is an http:// one."""
    def get(name: str) -> str | None:
        return env.get(name.lower()) or env.get(name.upper()) or None

    out: dict[str, str] = {}
    for scheme in ("http", "https"):
        url = get(f"{scheme}_proxy") or get("all_proxy")
        if url:
            url = url if "://" in url else f"http://{url}"
            if not url.startswith(("http://", "https://", "socks5://", "socks5h://")):
                raise ConfigError(f"{scheme.upper()}_PROXY must be an http://, https:// or socks5:// URL, "
                                  f"not {url.split('://')[0]}://...")
            out[scheme] = url
    no = get("no_proxy")
    if no:
        out["no"] = no
    return out


def _http2_available() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


class ProviderClient:
    def __init__(self, catalog: Catalog, env: Mapping[str, str] | None = None, *,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        env = os.environ if env is None else env
        self.endpoints = {
            name: Endpoint(p, env.get(p.api_key_env) if p.api_key_env else None)
            for name, p in catalog.providers.items()
        }
        self._timeout = timeout.as_dict()
        # httpx transports used directly, without AsyncClient's per-request machinery (URL merging,
        # cookies, auth flows, redirects: none of which a provider API call needs). That halves
        # httpx's CPU per request (benchmarks/bench_gateway.py). Plain-http upstreams (local servers)
        # take the lean HTTP/1.1 transport; TLS providers keep httpcore, pooling HTTP/2 where offered.
        self._transports: dict[str, httpx.AsyncBaseTransport] = {
            "http": FastHTTP1Transport(),
            "https": httpx.AsyncHTTPTransport(http2=_http2_available(),
                                              limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200)),
        }
        self._urls: dict[tuple[str, str, bool, str | None], tuple[httpx.URL, dict[str, str]]] = {}
        # HTTPS_PROXY / HTTP_PROXY / NO_PROXY: a proxied origin gets a transport through its proxy (CONNECT for
        # https, absolute-form requests for http), chosen once per origin; no proxy set keeps the direct path.
        self._proxies = proxies_from_env(env)
        self._proxy_transports: dict[str, httpx.AsyncBaseTransport] = {}
        self._by_origin: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}

    def has_key(self, provider: str) -> bool:
        ep = self.endpoints[provider]
        return ep.key is not None or ep.provider.api_key_env is None

    def _transport(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        if not self._proxies:
            return self._transports[url.scheme]
        origin = (url.scheme, url.host, url.port)
        found = self._by_origin.get(origin)
        if found is None:
            proxy = self._proxies.get(url.scheme)
            netloc = f"{url.host}:{url.port}" if url.port else url.host
            if proxy is None or urllib.request.proxy_bypass_environment(netloc, {"no": self._proxies.get("no", "")}):
                found = self._transports[url.scheme]
            else:
                found = self._proxy_transports.get(proxy)
                if found is None:
                    found = self._proxy_transports[proxy] = httpx.AsyncHTTPTransport(
                        proxy=httpx.Proxy(proxy), http2=_http2_available(),
                        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
            self._by_origin[origin] = found
        return found

    def _endpoint(self, provider: str, model: str, stream: bool, fmt: str | None) -> tuple[httpx.URL, dict[str, str]]:
        ep = self.endpoints[provider]
        spec = ep.provider
        # 424, not 5xx: SDKs retry 408/409/429/5xx for a minute, and only the gateway's operator can fix this
        if spec.api_key_env and not ep.key:
            raise WireError(424, "provider_error", f"the gateway has no API key for {provider}: set "
                            f"{spec.api_key_env} in the gateway's environment")
        if not spec.base_url:
            raise WireError(424, "provider_error", f"provider {provider} has no base_url: set "
                            f"providers.{provider}.base_url in the config file")
        headers = {"content-type": "application/json"}
        if spec.format == "anthropic":
            url = f"{spec.base_url}/messages"
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if ep.key:
                headers["x-api-key"] = ep.key
        elif spec.format == "gemini":
            action = "streamGenerateContent?alt=sse" if stream else "generateContent"
            url = f"{spec.base_url}/models/{model}:{action}"
            if ep.key:
                headers["x-goog-api-key"] = ep.key
        else:  # OpenAI: Chat Completions, or the Responses API for the models and clients that use it
            url = f"{spec.base_url}/{'responses' if fmt == 'responses' else 'chat/completions'}"
            if ep.key:
                headers["authorization"] = f"Bearer {ep.key}"
        if stream:
            headers["accept"] = "text/event-stream"
        return httpx.URL(url), headers

    def request(self, provider: str, model: str, body: bytes, *, stream: bool,
                extra_headers: Mapping[str, str] | None = None, fmt: str | None = None) -> httpx.Request:
        """The HTTP request for `body` (already in the provider's format, or in `fmt` when the model is called
        another way: "responses" for OpenAI's Responses API) to `model` on `provider`."""
        key = (provider, model, stream, fmt)
        found = self._urls.get(key)
        if found is None:
            found = self._urls[key] = self._endpoint(provider, model, stream, fmt)
        url, headers = found
        if extra_headers:
            headers = {**headers, **extra_headers}
        return httpx.Request("POST", url, content=body, headers=headers, extensions={"timeout": self._timeout})

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and return as soon as the status line and headers arrive; the caller reads the body
        (`aiter_raw`) and must `aclose()` the response. Transport failures become `WireError`s."""
        try:
            response = await self._transport(request.url).handle_async_request(request)
        except httpx.TimeoutException:
            raise WireError(504, "timeout", "the provider did not answer in time") from None
        except httpx.HTTPError as e:
            raise WireError(502, "provider_error", f"cannot reach the provider: {e}") from None
        response.request = request
        return response

    async def aclose(self) -> None:
        for transport in (*self._transports.values(), *self._proxy_transports.values()):
            await transport.aclose()
