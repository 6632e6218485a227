"""The dashboard as an ASGI app (Starlette; uvicorn serves it). Handlers translate HTTP to service calls and
results to pages; see `auth.py` for who may see what."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mcp_prism.config import Settings
from mcp_prism.errors import InvalidInput, PrismError
from mcp_prism.loop.analysis import AnalysisService
from mcp_prism.loop.batch import BatchService
from mcp_prism.loop.evaluate import EvaluationService
from mcp_prism.loop.experiments import ExperimentService
from mcp_prism.loop.monitoring import MonitorService
from mcp_prism.service import PrismService
from mcp_prism.team.keys import KeyCache
from mcp_prism.ui import pages
from mcp_prism.ui.auth import COOKIE, Viewer, bearer, host_problem, is_admin, same_origin
from mcp_prism.ui.html import e, page, static_text
from mcp_prism.ui.raters import RaterGrant, RaterLinkService

log = logging.getLogger(__name__)
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "chart.umd.min.js": "text/javascript",
          "chart.js.LICENSE.md": "text/plain"}
MAX_FORM = 16_384
Handler = Callable[[Request, Viewer], Awaitable[Response]]


class UI:
    def __init__(self, settings: Settings, *, open_mode: bool, admin_token: str | None,
                 allowed_hosts: frozenset[str] = frozenset()) -> None:
        self.settings, self.open_mode, self.admin_token, self.allowed = settings, open_mode, admin_token, allowed_hosts
        self.svc: PrismService | None = None
        self.keys: KeyCache | None = None

    @property
    def service(self) -> PrismService:
        assert self.svc is not None, "the app's lifespan opens the service"
        return self.svc

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.svc = await PrismService.open(self.settings)
        self.keys = KeyCache(self.svc.store)
        try:
            yield
        finally:
            await self.svc.close()

    # ------------------------------------------------------------------ auth
    def _refused(self, request: Request) -> Response | None:
        why = host_problem(request.headers.get("host"), request.headers.get("origin"), open_mode=self.open_mode,
                           allowed=self.allowed)
        if why:
            return _error(403, why)
        if request.method == "POST" and not same_origin(request.headers.get("host"), request.headers.get("origin")):
            return _error(403, "a change must come from this dashboard's own pages (Origin header missing or of "
                               "another site)")
        return None

    async def _viewer(self, request: Request) -> Viewer | None:
        if self.open_mode:
            return Viewer("owner")
        secret = bearer(request.headers.get("authorization"), request.cookies.get(COOKIE))
        if not secret:
            return None
        if is_admin(secret, self.admin_token):
            return Viewer("owner")
        key = await self.keys.verify(secret) if self.keys else None
        return Viewer("viewer", key.team) if key else None

    def guarded(self, handler: Handler, *, owner: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            refused = self._refused(request)
            if refused:
                return refused
            viewer = await self._viewer(request)
            if viewer is None:
                return RedirectResponse("/login", status_code=303)
            if owner and viewer.role != "owner":
                return _error(403, "only the owner (the gateway's admin token) can change this; your key can view")
            return await _safely(handler(request, viewer))
        return endpoint

    def rater(self, handler: Callable[[Request, RaterGrant], Awaitable[Response]], *, api: bool = False
              ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            refused = self._refused(request)
            if refused:
                return refused
            grant = await RaterLinkService(self.service).verify(request.path_params["token"])
            if grant is None:
                return _error(404, "this rating link is not valid (mistyped, or revoked): ask for a new one", api)
            return await _safely(handler(request, grant), api)
        return endpoint

    # ------------------------------------------------------------------ login
    async def login_page(self, request: Request) -> Response:
        body = ('<form method="post" class="act" action="/login"><label>admin token or virtual key'
                '<input name="token" type="password" required size="40"></label><button>Sign in</button></form>'
                '<p class="meta">The gateway\'s admin token (PRISM_GATEWAY_TOKEN) or a virtual key '
                '(mcp-prism keys create). Raters use the link they were sent.</p>')
        return HTMLResponse(page("Sign in", body, nav=False, scripts=()))

    async def login(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused:
            return refused
        form = await _form(request)
        secret = form.get("token", "")
        ok = is_admin(secret, self.admin_token) or (self.keys is not None and await self.keys.verify(secret))
        if not ok:
            return _error(401, "that token is not the admin token nor an active virtual key")
        resp = RedirectResponse("/costs", status_code=303)
        resp.set_cookie(COOKIE, secret, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return resp

    # ------------------------------------------------------------------ pages
    def _config(self) -> dict[str, Any]:
        return self.settings.user_config

    async def costs(self, request: Request, viewer: Viewer) -> Response:
        q = {k: v.strip() for k, v in request.query_params.items() if v.strip()}
        dim = q.get("by", "task_type")
        if dim not in pages.DIMENSIONS:
            raise InvalidInput(f"by must be one of {', '.join(pages.DIMENSIONS)}, not {dim!r}")
        filters = {k: q[k] for k in pages.FILTERS if k in q}
        note = ""
        if viewer.team is not None:  # a team's key sees its team's spend only
            filters["team"], note = viewer.team, f" (your key's team: {viewer.team})"
        period = {"days": _int(q.get("days"), "days"), "since": q.get("since"), "until": q.get("until")}
        svc = self.service
        r = await svc.cost_report(**period, group_by=[dim], filters=filters)
        daily = await svc.cost_report(**period, group_by=["day", dim], filters=filters)
        counts = (await BatchService(svc).list_requests(limit=1)).counts
        body, charts = pages.costs_body(r, daily, q, counts, note)
        return HTMLResponse(page("Costs", body, active="costs", charts=charts))

    async def matrix(self, request: Request, viewer: Viewer) -> Response:
        days = _int(request.query_params.get("days"), "days") or 30
        a = await AnalysisService(self.service, self._config()).analyze(days=days)
        body, charts = pages.matrix_body(a)
        return HTMLResponse(page("Task-model matrix", body, active="matrix", charts=charts))

    async def experiments(self, request: Request, viewer: Viewer) -> Response:
        listing = await ExperimentService(self.service).list(request.query_params.get("task_type") or None)
        return HTMLResponse(page("Experiments", pages.experiments_body(listing), active="experiments"))

    async def experiment(self, request: Request, viewer: Viewer, **extra: Any) -> Response:
        exp_id = request.path_params["exp"]
        svc = self.service
        r = await ExperimentService(svc).report(exp_id)
        owner = viewer.role == "owner"
        progress = await EvaluationService(svc).rating_progress(exp_id) if owner else None
        agreement = await RaterLinkService(svc).agreement(exp_id) if owner else None
        body, charts = pages.experiment_body(r, owner=owner, progress=progress, agreement=agreement, **extra)
        return HTMLResponse(page(f"Experiment {exp_id}", body, active="experiments", charts=charts))

    async def promote(self, request: Request, viewer: Viewer) -> Response:
        form = await _form(request)
        result = await ExperimentService(self.service).promote(
            request.path_params["exp"], form.get("candidate", ""), author=form.get("author", ""),
            reason=form.get("reason", ""))
        return await self.experiment(request, viewer, promoted=result)

    async def new_rater_link(self, request: Request, viewer: Viewer) -> Response:
        form = await _form(request)
        created = await RaterLinkService(self.service).create(request.path_params["exp"], form.get("rater", ""),
                                                              created_by="dashboard")
        return await self.experiment(request, viewer, new_link=created)

    async def rules(self, request: Request, viewer: Viewer) -> Response:
        svc = self.service
        views = await svc.list_rules()
        histories = [await svc.rule_history(v.task_type) for v in views if v.version > 0]
        monitor = MonitorService(svc, self._config())
        body = pages.rules_body(views, histories, await monitor.list_monitors(), await monitor.alerts(open_only=False),
                                owner=viewer.role == "owner")
        return HTMLResponse(page("Rules", body, active="rules"))

    async def rollback(self, request: Request, viewer: Viewer) -> Response:
        form = await _form(request)
        task = request.path_params["task"]
        to = _int(form.get("to"), "to")
        if to is None:
            raise InvalidInput("give the version to roll back to (0 = the shipped default)")
        await self.service.rollback_rule(task, to, author=form.get("author", ""), reason=form.get("reason", ""))
        return RedirectResponse(f"/rules#rule-{quote(task, safe='')}", status_code=303)

    # ------------------------------------------------------------------ rating
    async def rate_page(self, request: Request, grant: RaterGrant) -> Response:
        body = pages.rating_body(grant.experiment_id, grant.rater)
        return HTMLResponse(page(f"Rate experiment {grant.experiment_id}", body, nav=False))

    async def rate_next(self, request: Request, grant: RaterGrant) -> Response:
        skip = [s for s in (request.query_params.get("skip") or "").split(",") if s][:1000]
        pair = await EvaluationService(self.service).next_for_rating(grant.experiment_id, grant.rater, skip=skip)
        return JSONResponse(json.loads(pair.model_dump_json()))

    async def rate_submit(self, request: Request, grant: RaterGrant) -> Response:
        try:
            data = json.loads((await _body(request)) or b"{}")
        except ValueError:
            raise InvalidInput("send the rating as JSON: {\"token\": ..., \"rating\": ...}") from None
        token = str(data.get("token", ""))
        if token.rsplit(":", 2)[0] != grant.experiment_id:  # a link rates its own experiment only
            raise InvalidInput("this pair is not part of the experiment your link is for")
        rec = await EvaluationService(self.service).submit_rating(token, str(data.get("rating", "")), grant.rater,
                                                                  data.get("note"))
        return JSONResponse(json.loads(rec.model_dump_json()))

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _error(404, f"no static file {name!r}")
        return Response(static_text(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})


# ==================================================================== helpers
async def _safely(work: Awaitable[Response], api: bool = False) -> Response:
    try:
        return await work
    except PrismError as exc:
        return _error(400, str(exc), api)
    except Exception:
        log.exception("dashboard request failed")
        return _error(500, "unexpected failure: see the server's log", api)


def _error(status: int, message: str, api: bool = False) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=status)
    html = page("Error" if status >= 500 else "Refused" if status in (401, 403) else "Not done",
                f'<p class="error" data-testid="error">{e(message)}</p><p><a href="/">back</a></p>',
                nav=False, scripts=())
    resp = HTMLResponse(html, status_code=status)
    resp.headers["X-Error"] = message[:200].encode("ascii", "replace").decode()
    return resp


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {value!r}") from None


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise InvalidInput(f"the request is too large (over {MAX_FORM:,} bytes)")
    return body


async def _form(request: Request) -> dict[str, str]:
    data = parse_qs((await _body(request)).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0].strip() for k, v in data.items()}


def build_app(settings: Settings, *, open_mode: bool, admin_token: str | None = None,
              allowed_hosts: frozenset[str] = frozenset()) -> Starlette:
    ui = UI(settings, open_mode=open_mode, admin_token=admin_token, allowed_hosts=allowed_hosts)
    g = ui.guarded

    async def home(request: Request) -> Response:
        return RedirectResponse("/costs", status_code=303)

    routes = [
        Route("/", home), Route("/login", ui.login_page, methods=["GET"]), Route("/login", ui.login, methods=["POST"]),
        Route("/static/{name}", ui.static),
        Route("/costs", g(ui.costs)), Route("/matrix", g(ui.matrix)), Route("/experiments", g(ui.experiments)),
        Route("/experiments/{exp}", g(ui.experiment)),
        Route("/experiments/{exp}/promote", g(ui.promote, owner=True), methods=["POST"]),
        Route("/experiments/{exp}/rater-link", g(ui.new_rater_link, owner=True), methods=["POST"]),
        Route("/rules", g(ui.rules)),
        Route("/rules/{task}/rollback", g(ui.rollback, owner=True), methods=["POST"]),
        Route("/rate/{token}", ui.rater(ui.rate_page)),
        Route("/rate/{token}/next", ui.rater(ui.rate_next, api=True)),
        Route("/rate/{token}/submit", ui.rater(ui.rate_submit, api=True), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=ui.lifespan)
    app.state.ui = ui
    return app
