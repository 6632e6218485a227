"""Task types: what a request is for, and the tier of model it needs by default.

Pure data. Teams add their own task types in the config file; they reach the core as
`TaskTypeSpec` values, the same shape as the built-ins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum


class Tier(IntEnum):
    """Capability tiers, ordered so that `Tier.COMPLEX > Tier.SIMPLE`."""

    SIMPLE = 0
    STANDARD = 1
    COMPLEX = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Tier) -> Tier:
        if isinstance(value, Tier):
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"unknown tier {value!r}; use one of: simple, standard, complex")
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown tier {value!r}; use one of: simple, standard, complex") from None


TASK_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,47}$")


@dataclass(frozen=True)
class TaskTypeSpec:
    """A kind of request. `keywords` feed the classifier for team-defined types."""

    name: str
    description: str
    tier: Tier
    keywords: tuple[str, ...] = field(default=())
    capture_samples: bool = False  # store prompts/responses for experiments (opt-in)
    builtin: bool = False


GENERAL = "general"

BUILTIN_TASK_TYPES: tuple[TaskTypeSpec, ...] = (
    TaskTypeSpec("ticket_classification", "Label, triage or route an issue, ticket or message.",
                 Tier.SIMPLE, builtin=True),
    TaskTypeSpec("code_autocomplete", "Complete or fill in a small piece of code in place.",
                 Tier.SIMPLE, builtin=True),
    TaskTypeSpec("data_extraction", "Pull structured fields out of text, logs or documents.",
                 Tier.SIMPLE, builtin=True),
    TaskTypeSpec("email_drafting", "Write or reply to an email, announcement or status update.",
                 Tier.SIMPLE, builtin=True),
    TaskTypeSpec("doc_generation", "Write or update docstrings, READMEs, API docs, changelogs.",
                 Tier.SIMPLE, builtin=True),
    TaskTypeSpec("test_generation", "Write unit, integration or property tests for code.",
                 Tier.SIMPLE, builtin=True),
    TaskTypeSpec("code_review", "Review a diff or pull request for defects, style and design.",
                 Tier.STANDARD, builtin=True),
    TaskTypeSpec("security_audit", "Look for vulnerabilities, leaked secrets, unsafe dependencies.",
                 Tier.STANDARD, builtin=True),
    TaskTypeSpec("deploy_check", "Check a release: migrations, config, flags, rollout, rollback.",
                 Tier.STANDARD, builtin=True),
    TaskTypeSpec("bug_investigation", "Find the root cause of a failure, crash or wrong behaviour.",
                 Tier.COMPLEX, builtin=True),
    TaskTypeSpec("architecture_design", "Design a system, module boundaries, data model or migration plan.",
                 Tier.COMPLEX, builtin=True),
    TaskTypeSpec(GENERAL, "Anything else; the fallback when the classifier is unsure.",
                 Tier.STANDARD, builtin=True),
)

BUILTIN_NAMES: frozenset[str] = frozenset(t.name for t in BUILTIN_TASK_TYPES)
