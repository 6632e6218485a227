"""The HTTP gateway adapter: OpenAI- and Anthropic-compatible endpoints that route, forward and record."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping

import uvicorn

from mcp_prism.config import Settings
from mcp_prism.errors import ConfigError
from mcp_prism.gateway.app import Gateway
from mcp_prism.service import PrismService

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_gateway(settings: Settings, *, token: str | None = None, env: Mapping[str, str] | None = None,
                  flush_interval: float = 0.2) -> Gateway:
    return Gateway(lambda: PrismService.open(settings), token=token, env=env, flush_interval=flush_interval,
                   upstream_timeout=settings.upstream_timeout)


def _fastest(module: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return module


def serve_gateway(settings: Settings, *, host: str = "127.0.0.1", port: int = 4000, token: str | None = None) -> None:
    """Serve the gateway until interrupted; a graceful stop (SIGINT/SIGTERM) writes every pending event."""
    if not token and not _loopback(host):
        raise ConfigError(f"the gateway listens on {host}, beyond this machine: set PRISM_GATEWAY_TOKEN so that "
                          "only your clients can spend through it")
    app = build_gateway(settings, token=token)
    log.info("mcp-prism gateway on http://%s:%d (OpenAI: /v1/chat/completions, Anthropic: /v1/messages; "
             "token %s)", host, port, "required" if token else "not required: loopback only")
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                            loop=_fastest("uvloop", "asyncio"), http=_fastest("httptools", "h11"),
                            lifespan="on", timeout_graceful_shutdown=30)
    uvicorn.Server(config).run()
