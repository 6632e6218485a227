"""Analysis arithmetic: thresholds, quality verdicts, rework detection, recommendation evidence.

Pure functions over numbers the loop services read from the store; no I/O. Money arithmetic (monthly
projection, re-pricing) is `core.report`'s; the statistics are `core.stats`'.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from mcp_prism.core.config_schema import checked
from mcp_prism.core.stats import DEFAULT_THRESHOLDS, Qualification, clopper_pearson_lower, qualify
from mcp_prism.core.tasks import Tier
from mcp_prism.errors import ConfigError

# The team's policy: human ratings and automated checks must clear 95%, an LLM judge 90%
# (../shared/notes/evaluation.md); imported outcomes are judged like an LLM judge's.
DEFAULT_CONFIDENCE = 0.95
VERDICTS = ("acceptable", "degraded", "unacceptable", "tie", "error")

# Evidence kinds, strongest first: only the first two justify deploying a cheaper model.
EVIDENCE_ORDER = ("experiment", "observed_quality", "low_quality", "errors", "rework", "tier_mismatch")


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """The `[analysis]`, `[monitoring]` and `[alerts]` settings of the config file, validated."""

    acceptable_score: float = 0.7  # a recorded quality at or above this is an acceptable answer
    min_rated: int = 20  # rated requests needed before quality is trusted either way
    max_error_share: float = 0.10  # status != ok share above which a task type is under-provisioned
    rework_minutes: float = 5.0  # requests of one user and task type this close together form a burst
    rework_burst: int = 3  # a burst of this many requests or more counts as rework
    rework_share: float = 0.30  # rework share above which a task type is under-provisioned
    review_after_days: int = 90
    baseline_days: int = 30  # how far before a monitor started its baseline is read
    regression_test: str = "upper_bound"  # or "lower_bound" (strict: flags anything not certified)
    webhook_url: str | None = None
    webhook_timeout: float = 5.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> LoopSettings:
        config, d = checked(config), cls()
        analysis = _table(config, "analysis")
        monitoring = _table(config, "monitoring")
        alerts = _table(config, "alerts")
        acceptable = _number(monitoring, "monitoring.acceptable_score", d.acceptable_score, 0, 1)
        url = alerts.get("webhook_url")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ConfigError("alerts.webhook_url must be an http:// or https:// URL (a Slack incoming webhook)")
        test = monitoring.get("regression_test", d.regression_test)
        if test not in ("upper_bound", "lower_bound"):
            raise ConfigError("monitoring.regression_test must be upper_bound or lower_bound")
        return cls(
            acceptable_score=_number(analysis, "analysis.acceptable_score", acceptable, 0, 1),
            min_rated=int(_number(monitoring, "monitoring.min_rated",
                                  _number(analysis, "analysis.min_rated", d.min_rated, 1, 100_000), 1, 100_000)),
            max_error_share=_number(analysis, "analysis.max_error_share", d.max_error_share, 0, 1),
            rework_minutes=_number(analysis, "analysis.rework_minutes", d.rework_minutes, 0, 1440),
            rework_burst=int(_number(analysis, "analysis.rework_burst", d.rework_burst, 2, 1000)),
            rework_share=_number(analysis, "analysis.rework_share", d.rework_share, 0, 1),
            review_after_days=int(_number(monitoring, "monitoring.review_after_days", d.review_after_days, 1, 3660)),
            baseline_days=int(_number(monitoring, "monitoring.baseline_days", d.baseline_days, 1, 3660)),
            regression_test=str(test),
            webhook_url=url,
            webhook_timeout=_number(alerts, "alerts.timeout_seconds", d.webhook_timeout, 0.1, 120),
        )


def _table(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] in the config file must be a table")
    return value


def _number(table: Mapping[str, Any], where: str, default: float, lo: float, hi: float) -> float:
    key = where.split(".", 1)[1]
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{where} must be a number between {lo} and {hi}")
    return float(value)


# ---------------------------------------------------------------- thresholds and bounds
def evaluation_settings(evaluation: Mapping[str, Any] | None) -> tuple[str, float, float]:
    """(method, threshold, confidence) of an experiment's `evaluation` JSON, with the policy defaults."""
    evaluation = evaluation or {}
    method = str(evaluation.get("method") or "human")
    threshold = evaluation.get("threshold")
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 < threshold < 1:
        threshold = DEFAULT_THRESHOLDS.get(method, DEFAULT_THRESHOLDS["human"])
    confidence = evaluation.get("confidence")
    if not isinstance(confidence, int | float) or isinstance(confidence, bool) or not 0.5 < confidence < 1:
        confidence = DEFAULT_CONFIDENCE
    return method, float(threshold), float(confidence)


def rated_threshold(sources: Iterable[str]) -> float:
    """The threshold recorded quality must clear: the strictest policy among the sources that rated it."""
    found = [DEFAULT_THRESHOLDS[s] for s in sources if s in DEFAULT_THRESHOLDS]
    return max(found) if found else DEFAULT_THRESHOLDS["judge"]


def upper_bound(acceptable: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided upper confidence bound of an acceptance rate (1 minus the failures' lower bound)."""
    if n == 0:
        return 1.0
    return 1.0 - clopper_pearson_lower(n - acceptable, n, confidence)


def tally(verdicts: Mapping[str, int]) -> tuple[int, int, int]:
    """(acceptable, judged n, ties) from verdict counts; an `error` verdict judged nothing, a tie is
    judged but not acceptable (the judge did not agree with itself in both orders)."""
    acceptable = int(verdicts.get("acceptable", 0))
    n = sum(int(c) for v, c in verdicts.items() if v != "error")
    return acceptable, n, int(verdicts.get("tie", 0))


def qualify_counts(verdicts: Mapping[str, int], evaluation: Mapping[str, Any] | None) -> Qualification:
    _, threshold, confidence = evaluation_settings(evaluation)
    acceptable, n, _ = tally(verdicts)
    return qualify(acceptable, n, threshold, confidence)


# ---------------------------------------------------------------- observed quality
@dataclass(frozen=True, slots=True)
class ObservedQuality:
    """Recorded quality of one model (or task type) over a window."""

    rated: int
    acceptable: int
    mean: float | None
    threshold: float
    qualification: Qualification
    upper: float
    sources: tuple[str, ...] = ()

    @property
    def share(self) -> float | None:
        return self.acceptable / self.rated if self.rated else None


def observed_quality(rated: int, acceptable: int, mean: float | None, sources: Iterable[str],
                     confidence: float = DEFAULT_CONFIDENCE) -> ObservedQuality:
    found = tuple(sorted({s for s in sources if s}))
    threshold = rated_threshold(found)
    return ObservedQuality(rated, acceptable, mean, threshold, qualify(acceptable, rated, threshold, confidence),
                           upper_bound(acceptable, rated, confidence), found)


def qualifies(q: ObservedQuality, s: LoopSettings) -> bool:
    """Enough rated requests, and the lower bound of the acceptable share clears the threshold."""
    return q.rated >= s.min_rated and q.qualification.qualified


def low_quality(q: ObservedQuality, s: LoopSettings) -> bool:
    """Enough rated requests, and the quality is confidently poor: a mean below the acceptable score,
    or an acceptable share whose UPPER bound is below the threshold. (A lower bound below the threshold
    only says "not certified yet": 20/20 acceptable has a 95% lower bound of 86%.)"""
    if q.rated < s.min_rated:
        return False
    return (q.mean is not None and q.mean < s.acceptable_score) or q.upper < q.threshold


def is_regression(acceptable: int, n: int, threshold: float, s: LoopSettings,
                  confidence: float = DEFAULT_CONFIDENCE) -> bool:
    """A monitored rule version regressed: enough rated requests and, by default, the acceptable share is
    confidently below the threshold (upper bound below it). `regression_test = "lower_bound"` is the
    strict reading: anything the data cannot certify counts (20/20 would still fail a 0.90 threshold)."""
    if n < s.min_rated:
        return False
    if s.regression_test == "lower_bound":
        return clopper_pearson_lower(acceptable, n, confidence) < threshold
    return upper_bound(acceptable, n, confidence) < threshold


# ---------------------------------------------------------------- rework
def rework_count(times: Sequence[datetime], window: timedelta, burst: int) -> int:
    """Requests that repeat an earlier one: in each burst (consecutive requests no more than `window`
    apart) of at least `burst` requests, every request after the first. `times` sorted ascending."""
    total, size = 0, 0
    previous: datetime | None = None
    for t in times:
        if previous is not None and t - previous <= window:
            size += 1
        else:
            total += size - 1 if size >= burst else 0
            size = 1
        previous = t
    return total + (size - 1 if size >= burst else 0)


# ---------------------------------------------------------------- recommendations
def upgrade_tier(current: Tier) -> Tier | None:
    return Tier(current + 1) if current < Tier.COMPLEX else None


def saving(now: Decimal, after: Decimal | None) -> Decimal | None:
    """Monthly saving: positive when the change is cheaper, negative for an upgrade."""
    return None if after is None else now - after


def experiment_command(task_type: str, candidates: Sequence[str], method: str = "judge", samples: int = 60,
                       baseline: str | None = None) -> str:
    """The `experiment start` command; `baseline` names the model the traffic ran on when it is not the rule's."""
    return ("mcp-prism experiment start " + shlex.quote(task_type) + " --candidates "
            + shlex.quote(",".join(candidates)) + f" --method {method} --samples {samples}"
            + (f" --baseline {shlex.quote(baseline)}" if baseline else ""))


def rollback_command(task_type: str, version: int, reason: str = "monitor regression") -> str:
    return (f"mcp-prism rules rollback {shlex.quote(task_type)} --to {version} --author <you> "
            f"--reason {shlex.quote(reason)}")


def evidence_rank(kind: str) -> int:
    return EVIDENCE_ORDER.index(kind) if kind in EVIDENCE_ORDER else len(EVIDENCE_ORDER)
