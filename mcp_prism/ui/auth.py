"""Who may see the dashboard, and the DNS-rebinding / cross-site checks.

- Bound to loopback with no credentials required: one developer on this machine is the owner. As the MCP
  HTTP server and the no-auth gateway do, a Host that is not a loopback name (a DNS-rebinding page) and an
  Origin of another site are refused.
- Anywhere else: a credential is required, as `Authorization: Bearer ...` or the `prism_ui` cookie that
  /login sets (HttpOnly, SameSite=Strict). The gateway's admin token (PRISM_GATEWAY_TOKEN) makes one the
  owner (every page, promote, rollback, rater links); a virtual key (`mcp-prism keys create`) a viewer:
  read-only pages, costs limited to the key's team.
- A rater's link (`/rate/<token>`) opens that one experiment's rating page and its two API calls, nothing else.
- Every POST must come from this dashboard's own pages: an Origin header naming this Host (CSRF guard).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp_prism.config import is_loopback

COOKIE = "prism_ui"


@dataclass(frozen=True)
class Viewer:
    role: str  # owner | viewer
    team: str | None = None  # a viewer's costs are limited to their key's team


def host_problem(host: str | None, origin: str | None, *, open_mode: bool, allowed: frozenset[str]) -> str | None:
    """Why a request is refused on its Host/Origin headers, or None."""
    name = urlsplit("//" + (host or "")).hostname or ""
    if open_mode and not (is_loopback(name) or name in allowed):
        return (f"Host {host!r} is not this machine: the dashboard without credentials answers only requests "
                "addressed to 127.0.0.1, localhost or [::1] (DNS-rebinding guard)")
    if origin is not None and origin != "null":
        o = urlsplit(origin)
        if o.scheme not in ("http", "https"):
            return f"requests from {origin!r} are refused"
        if open_mode and not (is_loopback(o.hostname or "") or (o.hostname or "") in allowed):
            return (f"requests from web pages of another site (Origin {origin!r}) are refused by a dashboard "
                    "without credentials")
    return None


def same_origin(host: str | None, origin: str | None) -> bool:
    """A form POST must carry an Origin whose host:port is this request's Host."""
    if not origin or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def bearer(authorization: str | None, cookie: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return cookie or None


def is_admin(secret: str, admin_token: str | None) -> bool:
    return bool(admin_token) and hmac.compare_digest(secret.encode(), (admin_token or "").encode())
