"""Rating-only links: a rater gets `/rate/<token>` for one experiment, never an admin key.

A token reads `rl_<id>.<secret>`: the row is found by its public id and the SHA-256 of the whole token is
compared in constant time; only the hash is stored. A link opens that experiment's blind rating page for
that rater and nothing else (the dashboard's auth admits it on the `/rate/` paths only)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from pydantic import BaseModel, Field

from mcp_prism.core.agreement import pairwise
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.loop.evaluate import EvaluationService
from mcp_prism.loop.experiments import ExperimentService
from mcp_prism.service import PrismService
from mcp_prism.store import rater_links as sql
from mcp_prism.team.keys import hash_secret  # the same sha256 virtual keys are kept as

PREFIX = "rl_"


class RaterLink(BaseModel):
    id: str
    experiment_id: str
    rater: str
    created_by: str
    created_at: str
    active: bool


class RaterLinkCreated(BaseModel):
    link: RaterLink
    token: str = Field(description="shown only now; the store keeps its hash")
    path: str = Field(description="the rating page's path on the dashboard: /rate/<token>")


class RaterPair(BaseModel):
    rater_a: str
    rater_b: str
    shared: int
    observed_agreement: float | None
    kappa: float | None


class Agreement(BaseModel):
    experiment_id: str
    links: list[RaterLink]
    pairs: list[RaterPair] = Field(description="Cohen's kappa on the candidate verdicts, per pair of raters")


@dataclass(frozen=True)
class RaterGrant:
    experiment_id: str
    rater: str


def _view(r: object) -> RaterLink:
    return RaterLink(id=r["id"], experiment_id=r["experiment_id"], rater=r["rater"],  # type: ignore[index]
                     created_by=r["created_by"], created_at=r["created_at"],  # type: ignore[index]
                     active=r["revoked_at"] is None)  # type: ignore[index]


class RaterLinkService:
    def __init__(self, svc: PrismService) -> None:
        self.svc = svc

    async def create(self, experiment_id: str, rater: str, *, created_by: str = "cli") -> RaterLinkCreated:
        rater = (rater or "").strip()
        if not rater or len(rater) > 100:
            raise InvalidInput("--rater must be the rater's name or email, 1 to 100 characters")
        await ExperimentService(self.svc).show(experiment_id)  # an unknown experiment fails here, clearly
        link_id = secrets.token_hex(6)
        token = f"{PREFIX}{link_id}.{secrets.token_urlsafe(24)}"
        now = iso(utcnow())
        await sql.insert(self.svc.store, link_id=link_id, digest=hash_secret(token), experiment_id=experiment_id,
                         rater=rater, created_by=created_by, created_at=now)
        link = RaterLink(id=link_id, experiment_id=experiment_id, rater=rater, created_by=created_by,
                         created_at=now, active=True)
        return RaterLinkCreated(link=link, token=token, path=f"/rate/{token}")

    async def verify(self, token: str) -> RaterGrant | None:
        """The experiment and rater this token grants, or None (malformed, unknown, wrong secret, revoked)."""
        if not token.startswith(PREFIX) or "." not in token or len(token) > 200:
            return None
        row = await sql.get(self.svc.store, token[len(PREFIX):].split(".", 1)[0])
        if row is None or row["revoked_at"] is not None or not hmac.compare_digest(hash_secret(token), row["hash"]):
            return None
        return RaterGrant(row["experiment_id"], row["rater"])

    async def revoke(self, link_id: str) -> None:
        if not await sql.revoke(self.svc.store, link_id, iso(utcnow())):
            raise UnknownName("active rater link", link_id)

    async def agreement(self, experiment_id: str) -> Agreement:
        links = [_view(r) for r in await sql.for_experiment(self.svc.store, experiment_id)]
        labels = await sql.human_ratings(self.svc.store, experiment_id)
        pairs = [RaterPair(rater_a=p.rater_a, rater_b=p.rater_b, shared=p.shared, observed_agreement=p.observed,
                           kappa=p.kappa) for p in pairwise(labels)]
        return Agreement(experiment_id=experiment_id, links=links, pairs=pairs)

    def rating(self) -> EvaluationService:
        return EvaluationService(self.svc)
