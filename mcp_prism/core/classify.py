"""Offline task classifier: which task type a developer request is, and how hard it looks.

Pure and deterministic: stdlib only, no I/O, every regex compiled once when the `Classifier`
is built (and the complexity regexes at import).

How a request is scored
-----------------------
Each built-in task type has a table of weighted patterns (`_BUILTIN_PATTERNS`). A pattern is
either an *intent* (what the developer wants done: "write tests", "review", "design", "why
does", "extract", "draft an email") or a *topic* (what the request is about: "crash",
"migration", "README"). The rule that settles requests whose words point two ways — "write
tests that reproduce the crash", "review the architecture doc" — is:

    the leading intent beats the topic nouns.

Intent patterns carry higher weights than topic patterns, and an intent that starts near the
beginning of the request (after politeness such as "hey, can you please") gets up to double
weight. So "write tests that reproduce the crash in the payment worker" is test_generation
and "review the architecture doc for the new queue" is code_review, while "design the schema
for storing audit logs" is architecture_design. A negated intent ("don't debug") is ignored.

Per type, each pattern counts once (its earliest match), so a pasted log that says "error" a
hundred times does not outvote the one-line instruction above it. Team-defined types
(`TaskTypeSpec.keywords`, `builtin=False`) are scored from their keywords, each weighted as an
intent: a team that names a keyword means it.

Confidence combines the strength of the best score with its margin over the runner-up; below
`threshold` the classifier falls back to the default type (`general`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mcp_prism.core.human_text import strip_boilerplate
from mcp_prism.core.tasks import BUILTIN_TASK_TYPES, GENERAL, TaskTypeSpec

__all__ = ["Classification", "Classifier", "Complexity", "assess_complexity"]


@dataclass(frozen=True)
class Classification:
    """The verdict on one request.

    `task_type` is a spec name, or the default when unsure (`fell_back`). When the classifier
    falls back, `confidence` is that of the best candidate it declined and `runner_up` names
    that candidate, so a caller can still see the guess. Otherwise `runner_up` is the
    second-best type with any evidence, or None.
    """

    task_type: str
    confidence: float
    signals: tuple[str, ...]
    fell_back: bool
    runner_up: str | None


@dataclass(frozen=True)
class Complexity:
    """How many tiers (0, 1 or 2) to raise a task's default tier, and why."""

    boost: int
    signals: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Scoring constants

INTENT = True
TOPIC = False

# An intent match starting at the very beginning of the request scores (1 + LEAD_BONUS)x its
# weight; the bonus fades linearly to nothing at LEAD_SPAN characters.
LEAD_BONUS = 1.0
LEAD_SPAN = 48
# Team keywords: weight per keyword (treated as intent).
KEYWORD_WEIGHT = 3.0
# confidence = strength * (MARGIN_FLOOR + (1 - MARGIN_FLOOR) * margin)
#   strength = best / (best + STRENGTH_HALF);  margin = (best - runner_up) / best
STRENGTH_HALF = 2.0
MARGIN_FLOOR = 0.5
# Very long texts are scanned in a head + tail window so a call stays fast on pasted logs.
SCAN_HEAD = 3000
SCAN_TAIL = 1000
MAX_PHRASES = 5  # evidence phrases reported for the winning type

_W = r"[\w'-]+"  # one word
_GAP = r"(?:\s+[\w'./#-]+){0,4}?\s+"  # up to four intervening words

# Patterns are written in lowercase and matched against the lowercased request, whole words
# only (each is wrapped in (?<!\w)...(?!\w)); write `\w*` to allow a stem. Use only
# non-capturing groups (?:...).
_Pattern = tuple[str, float, bool]  # (regex, weight, is_intent)


def I(weight: float, pattern: str) -> _Pattern:  # noqa: E743 - short on purpose: table rows
    """An intent pattern: what the developer wants done."""
    return (pattern, weight, INTENT)


def T(weight: float, pattern: str) -> _Pattern:
    """A topic pattern: what the request is about."""
    return (pattern, weight, TOPIC)


_BUILTIN_PATTERNS: dict[str, tuple[_Pattern, ...]] = {
    "ticket_classification": (
        I(3.5, r"triage\w*"),
        I(3.0, r"(?:label|tag|categori[sz]e|classify|route|sort)(?:\s+(?:this|these|each|the|all))"),
        I(3.0, r"(?:apply|add|assign)\s+(?:the\s+)?(?:labels?|tags?|severit(?:y|ies)|priorit(?:y|ies))"),
        I(3.0, r"assign\s+(?:a|an)\s+(?:severity|priority|owner|team|label)"),
        I(2.5, r"classify|categori[sz]e|prioriti[sz]e"),
        I(3.0, r"which\s+(?:team|queue|component|label|channel|owner|bucket|category)"),
        I(3.0, r"(?:which|what)\s+team\s+owns"),
        I(2.5, r"mark\s+which"),
        I(2.5, r"dedupe|de-duplicate|deduplicate"),
        I(3.0, r"duplicate\s+of\s+#?\d+"),
        I(3.0, r"(?:is\s+this|are\s+these)\s+(?:\w+\s+)?(?:ticket|issue|bug|"
            r"alert)s?\s+(?:a\s+)?\w+\s+or\s+\w+"),
        T(2.5, r"p[0-4]\s+or\s+p[0-4]|sev\s?[0-4]\s*(?:\.\.|-|or|to)\s*sev\s?[0-4]"),
        T(1.5, r"(?:support\s+|jira\s+|zendesk\s+)?tickets?"),
        T(1.0, r"issues"),
        T(1.0, r"jira|zendesk|linear|backlog|inbox"),
        T(2.0, r"feature\s+requests?\s+(?:vs\.?|or|/)\s+bugs?|bugs?\s+(?:vs\.?|or|/)\s+feature\s+requests?"),
        T(1.5, r"severity|priority|sentiment|good-first-issue"),
        T(1.0, r"(?:as|into)\s+(?:one\s+of\s+)?\{?\s*\w+\s*(?:,|/)\s*\w+\s*(?:,|/|or)"),
        T(1.0, r"labels?"),
    ),
    "code_autocomplete": (
        I(3.5, r"(?:auto-?)?complete\s+(?:this|the|my)"),
        I(3.5, r"autocomplete"),
        I(3.5, r"finish\s+(?:this|the|my|writing)"),
        I(3.5, r"fill\s+in"),
        I(3.5, r"what\s+goes\s+(?:after|next|here|in)"),
        I(3.5, r"continue\s+(?:this|the|my)\s+(?:code|function|snippet|line|class|block)"),
        I(3.5, r"(?:write|give\s+me)\s+the\s+rest\s+of"),
        I(3.0, r"(?:next\s+(?:few\s+)?lines|rest\s+of\s+(?:this|the)\s+(?:line|function|loop|block))"),
        I(3.0, r"implement\s+the\s+todo"),
        T(2.0, r"missing\s+(?:lines?|fields?|cases?|branch(?:es)?|variants?|clause|body|return)"),
        T(1.5, r"(?:function|method)\s+(?:stub|body|signature)"),
        T(1.5, r"the\s+body\s+of"),
        T(1.5, r"keep\s+the\s+signature"),
    ),
    "data_extraction": (
        I(3.5, r"extract\w*"),
        I(3.0, r"pull\s+(?:out|the|all|every)"),
        I(3.0, r"parse\s+(?:these|this|the|all|each)"),
        I(3.0, r"grab\s+(?:all|every|the)"),
        I(3.0, r"scrape"),
        I(2.5, r"(?:get|give)\s+(?:me\s+)?the" + _GAP + r"(?:from|out\s+of)"),
        I(2.5, r"list\s+(?:all|every|each)"),
        T(2.0, r"(?:into|as|return|output)\s+(?:a\s+|an\s+)?(?:json|csv|table|dict|list|schema|structured|"
            r"yaml)"),
        T(2.0, r"structured\s+(?:fields|data|output)|unstructured"),
        T(1.0, r"(?:key/value|key-value)\s+pairs?|fields?|field\s+names"),
        T(1.5, r"(?:from|out\s+of)\s+(?:this|these|each|the)\s+(?:[\w-]+\s+)?(?:text|logs?|pdf|documents?|"
            r"payloads?|output|emails?|"
            r"snippet|contract|page|markdown|html|file)"),
        T(1.0, r"mentioned|referenced"),
    ),
    "email_drafting": (
        I(4.0, r"(?:draft|compose|write|send)\s+(?:me\s+)?(?:up\s+)?(?:a|an|the)?\s*(?:short\s+|quick\s+|"
            r"polite\s+|"
            r"brief\s+)?(?:email|e-mail|reply|response|message|note|announcement|memo|letter|dm)"),
        I(2.5, r"draft\w*"),
        I(2.5, r"compose"),
        I(3.5, r"(?:reply|respond)\s+to"),
        I(2.0, r"announc\w+"),
        I(3.5, r"(?:write|help\s+me\s+write)\s+(?:a\s+)?(?:polite\s+)?follow-?up"),
        T(2.0, r"e-?mails?"),
        T(2.5, r"status\s+update|thank-?you\s+note|intro\s+email|cold\s+email|mailing\s+list|newsletter"),
        T(1.5, r"slack\s+message|message\s+to|stakeholders|leadership|my\s+manager|the\s+team"),
        T(1.5, r"polite\w*|apologetic|tone|friendly|formal"),
        T(0.75, r"customers?|vendor|recruit\w*"),
    ),
    "doc_generation": (
        I(3.5, r"document\s+(?:the|our|this|these|how|what|each|all)"),
        I(4.0, r"(?:write|add|generate|create|update|improve)\s+(?:\w+\s+){0,2}?(?:docstrings?|readme|docs|"
            r"documentation|changelog|release\s+notes|jsdoc|javadoc|comments|man\s+page|guide|runbook|"
            r"contributing(?:\.md)?|api\s+docs|tutorial|wiki\s+page)"),
        I(3.5, r"(?:explain|describe)\s+in\s+the\s+(?:docs|readme|documentation|wiki)"),
        I(3.0, r"improve\s+the\s+wording"),
        T(2.5, r"docstrings?|jsdoc|javadoc|doc\s+comments|readme(?:\.md)?|changelog(?:\.md)?|"
            r"contributing\.md"),
        T(2.0, r"docs?(?:/[\w./-]+)?|documentation|release\s+notes|getting-started|quickstart|runbook|"
            r"man\s+page"),
        T(1.5, r"[\w/-]+\.(?:md|rst|adoc)"),
        T(1.5, r"inline\s+comments|module-level|api\s+reference|openapi"),
        T(1.0, r"guide|tutorial|wording"),
    ),
    "test_generation": (
        I(4.0, r"(?:write|add|generate|create|need|make)\s+(?:me\s+)?(?:some\s+|more\s+|a\s+|an\s+)?"
            r"(?:[\w+-]+\s+){0,2}?"
            r"(?:unit\s+|integration\s+|e2e\s+|regression\s+|snapshot\s+|property(?:-based)?\s+)?"
            r"(?:tests?|test\s+cases|specs?|fixtures)"),
        T(2.5, r"(?:unit|integration|e2e|end-to-end|regression|snapshot|property-based|table-driven|contract|"
            r"smoke|fuzz|load)\s+tests?"),
        T(2.0, r"test\s+cases?|test\s+coverage|coverage|fixtures"),
        I(3.0, r"(?:cover|covering)\s+(?:the\s+)?(?:[\w'-]+\s+){0,4}?(?:with\s+tests|edge\s+cases)"),
        T(2.0, r"with\s+tests"),
        I(3.0, r"test\s+the"),
        I(4.0, r"(?:increase|improve|raise|boost)\s+(?:the\s+)?(?:test\s+)?coverage"),
        I(2.5, r"mock\s+(?:the|out)"),
        T(1.5, r"pytest|jest|vitest|hypothesis|playwright|cypress|junit|rspec|mocha|testify"),
        T(1.0, r"tests?|edge\s+cases"),
        T(1.0, r"assert\w*"),
    ),
    "code_review": (
        I(3.0, r"(?:code\s+)?review\w*"),
        I(2.5, r"(?:look|go|read)\s+(?:over|through)\s+(?:my|this|the)"),
        I(3.0, r"look\s+at\s+(?:this|my|the)\s+(?:diff|pr|pull\s+request|change|changes|code|patch)"),
        I(3.5, r"critique|nitpick\w*|lgtm|second\s+pair\s+of\s+eyes|sanity[-\s]check\s+(?:my|this)\s+code"),
        I(3.0, r"(?:give|any)\s+(?:me\s+)?feedback\s+on|feedback\s+on"),
        I(3.0, r"what\s+would\s+you\s+change|any\s+(?:issues|problems)\s+with|anything\s+wrong\s+with"),
        I(2.5, r"point\s+out\s+anything"),
        I(3.0, r"is\s+this\s+(?:idiomatic|clean|readable|good\s+code)"),
        I(2.5, r"(?:follow|match)\s+(?:our|the)\s+(?:style\s+guide|conventions)"),
        T(2.0, r"before\s+(?:i|we)\s+merge"),
        T(1.5, r"diffs?|pull\s+requests?|prs?|patch|merge\s+request|mr"),
        T(1.0, r"refactor\w*|idiomatic|style\s+guide|naming|readability|production\s+quality"),
        T(1.0, r"the\s+changes|this\s+change|my\s+code"),
    ),
    "security_audit": (
        I(3.5, r"(?:security\s+)?audit\w*|pen-?test\w*|threat[-\s]model\w*"),
        # "<check|review|scan|look ...> ... for <something security-flavoured>": what is being
        # looked for decides the type, not the verb.
        I(5.0, r"(?:check|review|scan|look|audit|inspect|go)\w*(?:\s+[\w'./#-]+){0,6}?\s+for\s+"
            r"(?:\w+\s+){0,3}?(?:security|vulnerab\w*|injection|xss|ssrf|csrf|secrets?|credentials|"
            r"leaks?|exploits?|path\s+traversal|pii|cves?)"),
        I(2.5, r"(?:is|are)\s+(?:this|our|these|it)\s+(?:[\w-]+\s+){0,3}?"
            r"(?:safe|secure|vulnerable|exploitable)"),
        T(3.0, r"vulnerab\w*|exploit\w*|cves?|cve-\d{4}-\d+|security|insecure"),
        T(3.5, r"(?:sql|command|code|template|ldap)\s+injection|xss|ssrf|csrf|cors|path\s+traversal|rce|"
            r"account\s+takeover|privilege\s+escalation|auth\s+bypass|open\s+redirect"),
        T(3.5, r"(?:hard-?coded|leaked?|leaking)\s+(?:secrets?|credentials|keys?|tokens?|passwords?)|"
            r"leak\w*\s+(?:credentials|secrets)"),
        T(1.5, r"secrets?|credentials|api\s+keys?|tokens?|jwt|oauth|password\s+hashing|salt|pii|iam|"
            r"permissions|cookie\s+flags|pip-audit|npm\s+audit|dependabot|snyk"),
        T(1.5, r"(?:user|untrusted|external)[-\s](?:input|supplied|controlled)"),
        T(1.5, r"subprocess|eval|exec|os\.system|pickle\.loads?|yaml\.load|deserializ\w*|innerhtml|"
            r"dangerouslysetinnerhtml|running\s+as\s+root"),
        T(1.0, r"sanitiz\w*|escap\w*"),
    ),
    "deploy_check": (
        I(4.0, r"(?:safe|ok|okay|ready|good)\s+to\s+(?:deploy|ship|release|roll\s*out|go|"
            r"merge\s+and\s+deploy|promote)"),
        I(4.0, r"pre-?(?:deploy|release|flight)\w*|go/no-go|go\s+no\s+go"),
        I(3.0, r"before\s+(?:we|i)\s+(?:roll\s*out|ship|deploy|release|promote|apply|flip|go\s+live|cut)"),
        I(3.5, r"(?:check|verify|validate|sanity[-\s]check|confirm)\s+(?:that\s+)?(?:the\s+)?"
            r"(?:[\w'-]+\s+){0,3}?"
            r"(?:release|deploy\w*|rollout|roll\s*out|migrations?|config|flags?|env\s+vars|manifests|plan|"
            r"rollback|checklist|helm)"),
        T(3.0, r"rollback\s+(?:plan|steps)|roll\s*back\s+plan"),
        T(2.0, r"(?:backwards?|backward)[-\s]compatib\w*|breaking\s+changes"),
        T(2.0, r"deploy\w*|release|rollouts?|roll\s*out|rollbacks?|roll\s*back|canary|blue/green|"
            r"promot\w+\s+to\s+prod"),
        T(1.5, r"migrations?|feature\s+flags?|flags?|env\s+vars?|environment\s+variables|configmap|helm|"
            r"manifests|terraform\s+plan|readiness\s+probes?"),
        T(1.0, r"staging|prod|production|traffic"),
    ),
    "bug_investigation": (
        I(4.0, r"why\s+(?:does|do|did|is|are|was|were|would|can't|won't|doesn't|isn't)"),
        I(4.0, r"(?:,|-|:)?\s*why\s*\??\s*$"),
        I(4.0, r"root[-\s]cause\w*"),
        I(4.0, r"(?:figure|find)\s+out\s+(?:why|what)"),
        I(3.0, r"debug\w*|troubleshoot\w*|diagnos\w+"),
        I(3.0, r"investigat\w+"),
        I(3.5, r"what(?:'s|\s+is)\s+(?:going\s+on|wrong|happening|causing)|what\s+could\s+cause"),
        T(2.5, r"\w*(?:error|exception)|traceback|stack\s+(?:trace|dump)s?|panic:|segfault|"
            r"segmentation\s+fault|core\s+dump"),
        T(2.0, r"crash\w*|hangs?|freez\w+|memory\s+leak|leaks?\s+memory|deadlock\w*|flaky|intermittent\w*|"
            r"race\s+condition"),
        T(1.5, r"fail(?:s|ed|ing)?|broken|breaks|regress\w*|timeout|timed\s+out|connection\s+refused|"
            r"returns?\s+(?:a\s+)?[45]\d\d|returning\s+[45]\d\d|[45]\d\d\s+errors?|wrong|incorrect|off\s+by|"
            r"doubled|spik\w+|slow\w*|stopped\s+working|doesn't\s+work|not\s+working|"
            r"duplicate\s+\w+\s+sometimes|randomly|only\s+on"),
        T(1.0, r"(?:prod(?:uction)?\s+)?incident|outage|bug"),
    ),
    "architecture_design": (
        I(4.0, r"design\s+(?:the|a|an|our|it|this|how)"),
        I(3.0, r"(?:high-level|system)\s+design|architect(?:ing)?"),
        T(2.0, r"architecture|design\s+docs?"),
        I(3.5, r"propose\s+(?:an?\s+)?(?:architecture|design|how|approach)"),
        I(4.0, r"how\s+(?:should|would|do|could|can)\s+(?:we|you|i)\s+"
            r"(?:split|structure|shard|architect|model|design|scale|organi[sz]e|partition|migrate|decompose|handle)"),
        I(3.5, r"should\s+we\s+(?:use|adopt|go\s+with|move\s+to|switch\s+to)"),
        I(3.5, r"(?:what's|what\s+is)\s+the\s+best\s+way\s+to\s+(?:structure|model|design|organi[sz]e)"),
        I(3.0, r"sketch\s+(?:a|an|the|out)"),
        I(3.0, r"plan\s+the\s+migration|migration\s+plan|zero[-\s]downtime"),
        I(3.5, r"define\s+the\s+(?:interfaces|boundaries|contracts|api)"),
        T(2.0, r"trade-?offs|\w+\s+vs\.?\s+\w+"),
        T(1.5, r"data\s+model|schema|module\s+boundaries|boundaries|interfaces|monolith|microservices?|"
            r"services|event\s+sourcing|cqrs|sharding|shard|partitioning|scalab\w*|caching\s+strategy|strategy|"
            r"dead-letter|queue|scheduler|plugin\s+system|monorepo|polyrepo|multi-tenant|events/sec|"
            r"rbac|abac"),
    ),
}

# Leading politeness that should not push the real intent away from the start of the request.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:hey|hi|hello|ok|okay|so|yo)\b[\s,!.:-]*)?"
    r"(?:(?:can|could|would|will)\s+you\s+(?:please\s+|pls\s+|plz\s+)?|please\s+|pls\s+|plz\s+|"
    r"i\s+(?:need|want|would\s+like)\s+(?:you\s+)?to\s+|i'd\s+like\s+(?:you\s+)?to\s+|help\s+me\s+(?:to\s+)?|"
    r"let's\s+|quick(?:ly)?[\s,:-]+|task:\s*|request:\s*)?",
    re.IGNORECASE,
)
# A conceptual question ("explain what a race condition is") is about its topic nouns, not a
# request to do that kind of task: topic patterns count half.
_CONCEPT_QUESTION = re.compile(
    r"(?:explain|describe)\s+(?:what|how|why|the\s+difference)|"
    r"what(?:'s|\s+is|\s+are|\s+does|\s+do)\s+(?:a\s+|an\s+|the\s+(?:difference|syntax|meaning|point)\b)|"
    r"how\s+do\s+(?:i|you)\b|tell\s+me\s+about|eli5",
    re.IGNORECASE,
)
CONCEPT_TOPIC_FACTOR = 0.5
_NEGATED = re.compile(r"(?:\bdon'?t|\bdo\s+not|\bno\s+need\s+to|\bnot|\bwithout|\bnever|\bno)\s+$")


@dataclass(frozen=True)
class _TypePatterns:
    name: str
    regex: re.Pattern[str] | None
    weights: tuple[float, ...]
    intents: tuple[bool, ...]


def _wrap(pattern: str) -> str:
    return rf"(?<!\w)(?:{pattern})(?!\w)"


def _compile_type(name: str, patterns: Sequence[_Pattern]) -> _TypePatterns:
    if not patterns:
        return _TypePatterns(name, None, (), ())
    # The leading word-boundary check sits outside the alternation so that positions inside a
    # word fail at once instead of trying every alternative (about 3x faster).
    alternation = "|".join(f"(?P<p{i}>(?:{p})(?!\\w))" for i, (p, _, _) in enumerate(patterns))
    return _TypePatterns(
        name,
        re.compile(rf"(?<!\w)(?:{alternation})"),
        tuple(w for _, w, _ in patterns),
        tuple(k for _, _, k in patterns),
    )


_TRUNCATED = "long text: scanned head and tail only"


def _scan_window(text: str) -> tuple[str, bool]:
    if len(text) <= SCAN_HEAD + SCAN_TAIL:
        return text, False
    return text[:SCAN_HEAD] + "\n" + text[-SCAN_TAIL:], True


def _quote(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= 40 else s[:37] + "..."


class Classifier:
    """Score a request against every task type and return the best, or fall back."""

    def __init__(
        self,
        specs: Sequence[TaskTypeSpec] = BUILTIN_TASK_TYPES,
        *,
        default: str = GENERAL,
        threshold: float = 0.35,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate task type names: {', '.join(dupes)}")
        if default not in names:
            raise ValueError(f"default task type {default!r} is not among the specs: {', '.join(names)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
        self.default = default
        self.threshold = threshold
        self.names: tuple[str, ...] = tuple(names)
        compiled: list[_TypePatterns] = []
        for spec in specs:
            if spec.name == default:
                continue  # the fallback is never scored
            patterns: list[_Pattern] = []
            if spec.builtin:
                patterns.extend(_BUILTIN_PATTERNS.get(spec.name, ()))
            patterns.extend(
                (re.escape(k.strip().lower()), KEYWORD_WEIGHT, INTENT) for k in spec.keywords if k.strip()
            )
            compiled.append(_compile_type(spec.name, patterns))
        self._types: tuple[_TypePatterns, ...] = tuple(compiled)

    def classify(self, text: str) -> Classification:
        if text and "<" in text:  # an agent's reminders and wrappers are not the request (core/human_text)
            text = strip_boilerplate(text)
        if not text or not text.strip():
            return Classification(self.default, 0.0, ("empty text",), True, None)
        window, truncated = _scan_window(text)
        window = window.lower()  # patterns are lowercase; cheaper than re.IGNORECASE
        lead = _PREAMBLE.match(window)
        origin = lead.end() if lead else 0
        conceptual = _CONCEPT_QUESTION.match(window, origin) is not None
        topic_factor = CONCEPT_TOPIC_FACTOR if conceptual else 1.0

        # (score, order, name, [(contribution, start, snippet)])
        scored: list[tuple[float, int, str, list[tuple[float, int, str]]]] = []
        for order, tp in enumerate(self._types):
            if tp.regex is None:
                continue
            seen: set[int] = set()
            hits: list[tuple[float, int, str]] = []
            total = 0.0
            for m in tp.regex.finditer(window):
                idx = int(m.lastgroup[1:])  # type: ignore[index]
                if idx in seen:
                    continue
                start = m.start()
                weight = tp.weights[idx]
                if tp.intents[idx]:
                    if _NEGATED.search(window, max(0, start - 16), start):
                        continue
                    offset = max(0, start - origin)
                    weight *= 1.0 + LEAD_BONUS * max(0.0, 1.0 - offset / LEAD_SPAN)
                else:
                    weight *= topic_factor
                seen.add(idx)
                total += weight
                hits.append((weight, start, m.group()))
            if total > 0:
                scored.append((total, order, tp.name, hits))

        if not scored:
            evidence = ("no task-type evidence",) + ((_TRUNCATED,) if truncated else ())
            return Classification(self.default, 0.0, evidence, True, None)

        scored.sort(key=lambda s: (-s[0], s[1]))
        best, _, best_name, best_hits = scored[0]
        second = scored[1][0] if len(scored) > 1 else 0.0
        runner_up = scored[1][2] if len(scored) > 1 else None
        strength = best / (best + STRENGTH_HALF)
        margin = (best - second) / best
        confidence = strength * (MARGIN_FLOOR + (1.0 - MARGIN_FLOOR) * margin)
        confidence = min(1.0, max(0.0, confidence))

        best_hits.sort(key=lambda h: (-h[0], h[1]))
        signals = ["conceptual question: topic words count half"] if conceptual else []
        signals += [f"phrase {_quote(s)!r} -> {best_name}" for _, _, s in best_hits[:MAX_PHRASES]]
        if runner_up is not None:
            signals.append(f"runner-up {runner_up} scored {second:.2f} vs {best:.2f}")
        if truncated:
            signals.append(_TRUNCATED)

        if confidence < self.threshold:
            signals.append(f"confidence {confidence:.2f} below threshold {self.threshold:.2f}: fell back")
            return Classification(self.default, round(confidence, 4), tuple(signals), True, best_name)
        return Classification(best_name, round(confidence, 4), tuple(signals), False, runner_up)


# --------------------------------------------------------------------------------------------
# Complexity

LONG_CONTEXT_TOKENS = 50_000
LONG_TEXT_CHARS = 200_000  # ~50k tokens at ~4 characters a token
MAX_BOOST = 2
MANY_FILES = 3  # distinct file names that make a request multi-file

_FILE_REF = re.compile(
    r"(?<![\w/.-])[\w./-]*[\w-]\.(?:py|pyi|ts|tsx|js|jsx|go|rs|java|kt|rb|php|cs|cpp|cc|c|h|hpp|swift|scala|"
    r"sql|ya?ml|toml|json|tf|proto|sh)(?![\w])",
    re.IGNORECASE,
)

_COMPLEXITY_GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "multi-file scope",
        re.compile(
            _wrap(
                r"across\s+(?:the\s+|all\s+|our\s+|several\s+|multiple\s+|many\s+|\d+\s+)?(?:codebase|repos?|"
                r"repositories|services|modules|files|packages|microservices|teams|stack)|"
                r"cross-(?:service|module|repo|team|cutting)|multi-(?:service|module|repo|file)|"
                r"(?:multiple|several|many|all\s+(?:the\s+|our\s+)?|every|(?:[2-9]|\d{2,})\s+)"
                r"(?:files|services|microservices|modules|repos|repositories|packages)|"
                r"(?:whole|entire)\s+(?:codebase|repo|repository|system|monorepo)|end-to-end\s+flow"
            ),
            re.IGNORECASE,
        ),
    ),
    (
        "concurrency",
        re.compile(
            _wrap(
                r"race\s+conditions?|data\s+races?|racy|deadlock\w*|livelock\w*|concurren\w+|thread-?safe\w*|"
                r"multi-?thread\w*|multiple\s+threads|mutex\w*|lock\s+contention|atomic(?:ity|ally)?|"
                r"goroutine\s+leak|memory\s+ordering|parallel\s+writes"
            ),
            re.IGNORECASE,
        ),
    ),
    (
        "production incident",
        re.compile(
            _wrap(
                r"(?:prod(?:uction)?|live)\s+(?:incident|outage|is\s+down|down)|incident|outage|"
                r"data\s+(?:loss|corruption)|lost\s+(?:customer\s+)?data|(?:security\s+)?breach\w*|"
                r"sev\s?-?[01]|p0|customers?\s+(?:are\s+)?(?:affected|impacted)|down\s+in\s+prod\w*"
            ),
            re.IGNORECASE,
        ),
    ),
)


def _names_many_files(window: str) -> bool:
    return len({m.group().lower() for m in _FILE_REF.finditer(window)}) >= MANY_FILES


def assess_complexity(text: str, context_tokens: int = 0) -> Complexity:
    """Raise the tier by one for each strong signal group present, at most `MAX_BOOST` (2).

    Groups, in the order reported: multi-file scope (wording such as "across services", or
    `MANY_FILES` distinct file names), concurrency, production incident, long context
    (`context_tokens >= LONG_CONTEXT_TOKENS` or a text of `LONG_TEXT_CHARS` or more). Only the person's
    words count: an agent's reminders ("...so they run concurrently.") must never upgrade a request.
    """
    text = strip_boilerplate(text) if text and "<" in text else text or ""
    window, _ = _scan_window(text)
    signals: list[str] = []
    for label, regex in _COMPLEXITY_GROUPS:
        if regex.search(window) or (label == "multi-file scope" and _names_many_files(window)):
            signals.append(label)
    if context_tokens >= LONG_CONTEXT_TOKENS or len(text) >= LONG_TEXT_CHARS:
        signals.append("long context")
    return Complexity(min(MAX_BOOST, len(signals)), tuple(signals))
