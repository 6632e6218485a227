"""Provider clients: one pooled httpx client that knows each provider's endpoint and auth.

The gateway and the experiment runner post already-encoded bodies through `ProviderClient.send`
and read the answer as a stream (non-streaming answers are just short streams). Keys are read
from the environment variable the catalog names and live only in request headers: never logged,
never echoed (an upstream error body is passed on, but our request headers never are).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from mcp_prism.core.catalog import Catalog, ProviderSpec
from mcp_prism.providers.transport import FastHTTP1Transport
from mcp_prism.providers.wire import WireError

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)


@dataclass(frozen=True, slots=True)
class Endpoint:
    provider: ProviderSpec
    key: str | None


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
        self._urls: dict[tuple[str, str, bool], tuple[httpx.URL, dict[str, str]]] = {}

    def has_key(self, provider: str) -> bool:
        ep = self.endpoints[provider]
        return ep.key is not None or ep.provider.api_key_env is None

    def _endpoint(self, provider: str, model: str, stream: bool) -> tuple[httpx.URL, dict[str, str]]:
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
        else:
            url = f"{spec.base_url}/chat/completions"
            if ep.key:
                headers["authorization"] = f"Bearer {ep.key}"
        if stream:
            headers["accept"] = "text/event-stream"
        return httpx.URL(url), headers

    def request(self, provider: str, model: str, body: bytes, *, stream: bool,
                extra_headers: Mapping[str, str] | None = None) -> httpx.Request:
        """The HTTP request for `body` (already in the provider's format) to `model` on `provider`."""
        key = (provider, model, stream)
        found = self._urls.get(key)
        if found is None:
            found = self._urls[key] = self._endpoint(provider, model, stream)
        url, headers = found
        if extra_headers:
            headers = {**headers, **extra_headers}
        return httpx.Request("POST", url, content=body, headers=headers, extensions={"timeout": self._timeout})

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and return as soon as the status line and headers arrive; the caller reads the body
        (`aiter_raw`) and must `aclose()` the response. Transport failures become `WireError`s."""
        try:
            response = await self._transports[request.url.scheme].handle_async_request(request)
        except httpx.TimeoutException:
            raise WireError(504, "timeout", "the provider did not answer in time") from None
        except httpx.HTTPError as e:
            raise WireError(502, "provider_error", f"cannot reach the provider: {e}") from None
        response.request = request
        return response

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()
