"""The HTTP gateway adapter: OpenAI- and Anthropic-compatible endpoints that route, forward and record."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import uvicorn

from mcp_prism.config import Settings, is_loopback
from mcp_prism.errors import ConfigError, PrismError
from mcp_prism.gateway.app import Gateway
from mcp_prism.service import PrismService

log = logging.getLogger(__name__)


class StartupFailed(PrismError):
    exit_code = 3


def build_gateway(settings: Settings, *, token: str | None = None, env: Mapping[str, str] | None = None,
                  flush_interval: float = 0.2, no_auth: bool | None = None) -> Gateway:
    """`no_auth` True: open to anyone who can connect (bind it to loopback); False: a virtual key (or the
    admin `token`) is required; None: as before keys existed (open unless a token is given)."""
    return Gateway(lambda: PrismService.open(settings), token=token, env=env, flush_interval=flush_interval,
                   upstream_timeout=settings.upstream_timeout, no_auth=no_auth)


def _fastest(module: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return module


def serve_gateway(settings: Settings, *, host: str = "127.0.0.1", port: int = 4000, token: str | None = None,
                  no_auth: bool | None = None) -> None:
    """Serve the gateway until interrupted; a graceful stop (SIGINT/SIGTERM) writes every pending event.

    `no_auth` True (`--no-auth`): no key needed, refused unless bound to loopback. False: every request
    needs a virtual key (or the admin token). None (a caller from before keys): open on loopback, a key
    or the token required beyond it."""
    if no_auth and not is_loopback(host):
        raise ConfigError(f"--no-auth serves anyone who can connect, so it only binds to loopback, not {host}: "
                          "drop --no-auth and give clients virtual keys (mcp-prism keys create --team T)")
    if no_auth is None:
        no_auth = not token and is_loopback(host)
    app = build_gateway(settings, token=token, no_auth=no_auth)
    log.info("mcp-prism gateway on http://%s:%d (OpenAI: /v1/chat/completions, Anthropic: /v1/messages; %s)",
             host, port, "no auth: loopback only" if no_auth else "virtual key required"
             + (" (or the admin token)" if token else ""))
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                            loop=_fastest("uvloop", "asyncio"), http=_fastest("httptools", "h11"),
                            lifespan="on", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # start-up failed (logged with its reason): exit non-zero rather than look served
        raise StartupFailed("the gateway could not start (the reason is logged above); fix it and start again")
