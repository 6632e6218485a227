"""`mcp-prism install|uninstall opencode|claude`: put the skills package into a project, and take it out again.

The packaged files (top-level `commands/`, `skills/`, `agents_templates/`, shipped inside the wheel as
`mcp_prism/_bundle/*`, symlinks in the source tree) are copied into the folders each tool reads, and the
MCP server (plus, with `--gateway`, the gateway provider) is merged into the tool's JSON config.

Rules: never overwrite what we did not write; merge JSON key by key and keep every user key; append a
marked section to an existing AGENTS.md/CLAUDE.md instead of replacing it; a second run changes nothing;
`uninstall` removes exactly what was added and keeps anything the user edited since (and says so).
What was written is recorded, with hashes, in `.mcp-prism/install.json` in the project.

The plan is computed in memory first (`Installer`), so `--dry-run` shows exactly what a real run writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from mcp_prism import mcp_toolsets
from mcp_prism.core.tasks import BUILTIN_TASK_TYPES, Tier
from mcp_prism.errors import InvalidInput

TOOLS: tuple[str, ...] = ("opencode", "claude")
TEMPLATES: tuple[str, ...] = ("python", "typescript", "go", "rust", "java", "generic")
SERVER_NAME = "prism"  # MCP server name in both configs: tools become prism_<tool> / mcp__prism__<tool>
PROVIDER_ID = "prism"  # OpenCode provider for the gateway: models are `prism/auto`, `prism/prism/<task_type>`
MANIFEST = ".mcp-prism/install.json"
MANIFEST_FORMAT = 1
BEGIN = "<!-- mcp-prism:begin (added by `mcp-prism install`; `mcp-prism uninstall` removes it) -->"
END = "<!-- mcp-prism:end -->"
OPENCODE_SCHEMA = "https://opencode.ai/config.json"
CLAUDE_TIER_MODELS = {Tier.SIMPLE: "haiku", Tier.STANDARD: "sonnet", Tier.COMPLEX: "opus"}
TASK_LINE = re.compile(r"^Task type: `([a-z][a-z0-9_]*)`", re.MULTILINE)
# Files that mark a project's stack, for guessing the AGENTS.md template when none is given.
STACK_MARKERS: tuple[tuple[str, str], ...] = (
    ("pyproject.toml", "python"), ("setup.py", "python"), ("requirements.txt", "python"),
    ("package.json", "typescript"), ("go.mod", "go"), ("Cargo.toml", "rust"),
    ("pom.xml", "java"), ("build.gradle", "java"), ("build.gradle.kts", "java"),
)
TOOL_DIRS = {"opencode": ".opencode", "claude": ".claude"}


# ==================================================================== the packaged files
def bundle() -> Traversable:
    """The skills package as shipped: `commands/`, `skills/`, `agents_templates/`."""
    return resources.files("mcp_prism") / "_bundle"


@dataclass(frozen=True)
class Doc:
    """A markdown file with YAML-style frontmatter (flat `key: value` lines, which is all we ship)."""

    name: str
    meta: dict[str, Any]
    body: str
    text: str

    @property
    def task_type(self) -> str | None:
        """The `Task type: `x`` line: the task the command or agent does (None for /route, /costs)."""
        m = TASK_LINE.search(self.body)
        return m.group(1) if m else None


def parse_frontmatter(text: str, where: str = "the file") -> tuple[dict[str, Any], str]:
    """Split `---` frontmatter from the body. Values: plain or quoted strings, true/false, and one level
    of indented `key: value` lines under a bare `key:` (OpenCode's `permission:`). Enough for what we
    ship and write, without a YAML dependency."""
    if not text.startswith("---\n"):
        raise InvalidInput(f"{where} has no frontmatter: start it with a '---' line, key: value lines, '---'")
    end = text.find("\n---\n", 3)
    if end < 0:
        raise InvalidInput(f"{where}: the frontmatter is not closed; add a '---' line after the last key")
    meta: dict[str, Any] = {}
    nested: dict[str, Any] | None = None
    for n, line in enumerate(text[4:end].split("\n"), start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indented = line.startswith("  ")
        key, sep, value = line.strip().partition(":")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", key) or (value and not value.startswith(" ")) or (
                indented and nested is None):
            raise InvalidInput(f"{where}, line {n}: expected 'key: value', got {line!r}")
        if indented:
            nested[key] = _scalar(value.strip(), f"{where}, line {n}")  # type: ignore[index]
        elif not value.strip():
            nested = meta[key] = {}
        else:
            nested = None
            meta[key] = _scalar(value.strip(), f"{where}, line {n}")
    return meta, text[end + 5:]


def _scalar(value: str, where: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if value[:1] in ("'", '"'):
        if len(value) < 2 or value[-1] != value[0]:
            raise InvalidInput(f"{where}: unterminated quoted value {value!r}")
        inner = value[1:-1]
        return inner.replace("''", "'") if value[0] == "'" else json.loads(value)
    # Plain YAML scalars cannot start with these, nor contain ': ' or ' #' (YAML would read them differently).
    if value[:1] in "[]{}&*!|>%@`" or ": " in value or " #" in value:
        raise InvalidInput(f"{where}: quote the value {value!r} (YAML would not read it as plain text)")
    return value


def render_frontmatter(meta: dict[str, Any], body: str) -> str:
    lines = []
    for key, value in meta.items():
        if isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, dict):  # one level, for OpenCode's `permission:`
            shown = "".join(f"\n  {k}: {v}" for k, v in value.items())
        else:
            shown = str(value)
            try:
                _scalar(shown, key)
            except InvalidInput:
                shown = json.dumps(shown, ensure_ascii=False)
        lines.append(f"{key}:{'' if isinstance(value, dict) else ' '}{shown}")
    return "---\n" + "\n".join(lines) + "\n---\n" + body


def _doc(path: Traversable, name: str) -> Doc:
    text = path.read_text(encoding="utf-8")
    meta, body = parse_frontmatter(text, f"{path}")
    return Doc(name, meta, body, text)


def commands() -> dict[str, Doc]:
    """The slash commands, by name (`review`, `deploy-check`, ...)."""
    folder = bundle() / "commands"
    return {p.name[:-3]: _doc(p, p.name[:-3]) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".md")}


def skills() -> dict[str, Doc]:
    """The skills, by folder name (= their `name`)."""
    folder = bundle() / "skills"
    return {p.name: _doc(p / "SKILL.md", p.name) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.is_dir() and (p / "SKILL.md").is_file()}


def agents() -> dict[str, Doc]:
    """The subagents, by name; their frontmatter is Claude Code's (name, description, tools)."""
    folder = bundle() / "agents_templates" / "agents"
    return {p.name[:-3]: _doc(p, p.name[:-3]) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".md")}


def template_text(name: str) -> str:
    """One AGENTS.md template with the mcp_prism section (marked) at its end."""
    if name not in TEMPLATES:
        raise InvalidInput(f"unknown template {name!r}; use one of: {', '.join(TEMPLATES)}")
    text = (bundle() / "agents_templates" / f"{name}.md").read_text(encoding="utf-8")
    return text.rstrip("\n") + "\n\n" + section_block()


def section_block(gateway: str | None = None) -> str:
    """The marked mcp_prism section for AGENTS.md/CLAUDE.md; with a gateway, how recording works there."""
    text = (bundle() / "agents_templates" / "mcp-prism-section.md").read_text(encoding="utf-8").rstrip("\n")
    if gateway:
        root = _gateway_root(gateway)
        text += (f"\n- **Gateway**: this project's agent requests can go through the mcp_prism gateway at {root} "
                 f"(OpenCode: models `{PROVIDER_ID}/auto` and `{PROVIDER_ID}/prism/<task_type>`; Claude Code: "
                 f"`ANTHROPIC_BASE_URL={root}`). The gateway records those requests with their exact tokens and "
                 "cost: do not call record_usage for them (it would count them twice).")
    return f"{BEGIN}\n{text}\n{END}\n"


def _task_tiers() -> dict[str, Tier]:
    return {t.name: t.tier for t in BUILTIN_TASK_TYPES}


# ==================================================================== results
class InstallChange(BaseModel):
    action: str  # create, update, append, merge, remove, unchanged, keep
    path: str
    detail: str = ""


class InstallResult(BaseModel):
    tool: str
    project: str
    uninstall: bool = False
    dry_run: bool = False
    template: str | None = None
    gateway: str | None = None
    changes: list[InstallChange]
    notes: list[str]


def render_result(r: InstallResult) -> str:
    verb = "uninstall" if r.uninstall else "install"
    head = f"mcp-prism {verb} {r.tool} in {r.project}" + (" (dry run: nothing written)" if r.dry_run else "")
    rows = [c for c in r.changes if c.action != "unchanged"]
    lines = [head, ""]
    if rows:
        lines += ["| action | path | detail |", "|---|---|---|"]
        lines += [f"| {c.action} | {c.path} | {c.detail} |" for c in rows]
    else:
        lines.append("Nothing to change.")
    unchanged = len(r.changes) - len(rows)
    if unchanged:
        lines += ["", f"{unchanged} file(s) or key(s) already up to date."]
    if r.notes:
        lines += ["", *(f"- {n}" for n in r.notes)]
    return "\n".join(lines)


# ==================================================================== helpers
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_sha(value: Any) -> str:
    return _sha(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def _gateway_root(url: str) -> str:
    """The gateway's base URL without a trailing `/v1` (Anthropic clients add `/v1/messages` themselves)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"--gateway needs the gateway's URL, like http://127.0.0.1:4000, not {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def default_mcp_command() -> list[str]:
    """The interpreter running now, so the agent starts the server from the environment mcp_prism is in
    (an agent launched from a desktop often has no virtualenv on its PATH)."""
    return [sys.executable, "-m", "mcp_prism", "serve"]


def guess_template(project: Path) -> str:
    for marker, name in STACK_MARKERS:
        if (project / marker).exists():
            return name
    return "generic"


def _find_block(text: str) -> tuple[int, int] | None:
    """Start and end offsets of our marked block (end includes the END line's newline)."""
    start = text.find(BEGIN)
    if start < 0:
        return None
    end = text.find(END, start)
    if end < 0:
        return None
    end += len(END)
    if text[end:end + 1] == "\n":
        end += 1
    return start, end


def _remove_block(text: str, span: tuple[int, int]) -> str:
    before, after = text[:span[0]], text[span[1]:]
    if not after.strip():  # the block was appended at the end: drop the blank line we put before it
        return before.rstrip("\n") + "\n" if before.strip() else ""
    return before + after


def _get(data: dict[str, Any], path: Sequence[str]) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


_MISSING = object()


# ==================================================================== the installer
class Installer:
    """Plans the changes for one tool in one project, then applies them (unless a dry run)."""

    def __init__(self, project: Path, tool: str, *, dry_run: bool = False, refresh: bool = False) -> None:
        if tool not in TOOLS:
            raise InvalidInput(f"unknown tool {tool!r}; use one of: {', '.join(TOOLS)}")
        project = project.expanduser()
        if not project.is_dir():
            raise InvalidInput(f"project folder {project} does not exist; create it or pass --dir with your project")
        self.project = project.resolve()
        self.tool = tool
        self.dry_run = dry_run
        self.refresh = refresh  # `mcp-prism sync`: what the user deleted since install stays deleted
        self.manifest = self._load_manifest()
        self.entries: dict[str, Any] = self.manifest["tools"].get(tool, {}).get("files", {})
        self.new_entries: dict[str, Any] = {}
        self.writes: dict[str, str | None] = {}  # relative path -> new text, or None to delete
        self.changes: list[InstallChange] = []
        self.notes: list[str] = []
        self.new_dirs: list[str] = []

    # ---------------------------------------------------------------- confinement
    def _confine(self, rel: str) -> Path:
        """`project/rel`, refused when a symlink on the way (the file or a folder) leads out of the project:
        a hostile or careless link must not make install write, merge or append anywhere else."""
        path = self.project / rel
        if Path(os.path.realpath(path)).is_relative_to(self.project):
            return path
        link = next((p for p in [*reversed(path.parents), path] if p.is_relative_to(self.project) and p.is_symlink()),
                    path)
        raise InvalidInput(
            f"{link} is a symlink to {os.path.realpath(link)}, outside the project {self.project}; mcp-prism writes "
            f"only inside the project, so nothing was written (it would have written {rel}). Replace the link with "
            "a real file or folder, or run the command in the project the link points to")

    # ---------------------------------------------------------------- file state (pending writes first)
    def _read(self, rel: str) -> str | None:
        if rel in self.writes:
            return self.writes[rel]
        path = self._confine(rel)
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{path} is not UTF-8 text; move it aside and run the command again") from None

    def _others(self, rel: str) -> list[str]:
        return [t for t, v in self.manifest["tools"].items() if t != self.tool and rel in v.get("files", {})]

    def _change(self, action: str, rel: str, detail: str = "") -> None:
        self.changes.append(InstallChange(action=action, path=rel, detail=detail))

    def _write(self, rel: str, text: str | None) -> None:
        self._confine(rel)
        self.writes[rel] = text
        if text is not None:
            parent = PurePosixPath(rel).parent
            while str(parent) != "." and not (self.project / parent).exists():
                if str(parent) not in self.new_dirs:
                    self.new_dirs.append(str(parent))
                parent = parent.parent

    # ---------------------------------------------------------------- whole files (commands, skills, agents)
    def _deleted_by_user(self, rel: str, old: str | None, entry: dict[str, Any] | None) -> bool:
        if not (self.refresh and old is None and entry):
            return False
        self._change("keep", rel, "deleted since mcp-prism installed it; `mcp-prism install` puts it back")
        self.new_entries[rel] = entry
        return True

    def file(self, rel: str, content: str) -> None:
        old, entry = self._read(rel), self.entries.get(rel) or self._shared_entry(rel)
        record = {"kind": "file", "sha256": _sha(content)}
        if self._deleted_by_user(rel, old, entry):
            return
        if old is None:
            self._write(rel, content)
            self._change("create", rel)
        elif old == content:
            if entry is None:  # already there, identical, but not ours: leave it to its owner
                self._change("unchanged", rel, "already present (not recorded as installed by mcp-prism)")
                return
            self._change("unchanged", rel)
        elif entry is not None and entry.get("kind") == "file" and _sha(old) == entry["sha256"]:
            self._write(rel, content)
            self._change("update", rel, "newer packaged version")
        else:
            why = "edited since mcp-prism installed it" if entry else "exists and was not written by mcp-prism"
            self._change("keep", rel, why)
            if entry is not None:
                self.new_entries[rel] = entry  # still ours to account for at uninstall (it will be kept)
            return
        self.new_entries[rel] = record

    def _shared_entry(self, rel: str) -> dict[str, Any] | None:
        for tool in self._others(rel):
            return self.manifest["tools"][tool]["files"][rel]
        return None

    # ---------------------------------------------------------------- instructions: AGENTS.md / CLAUDE.md
    def instructions(self, rel: str, whole: str | None, block: str) -> None:
        """`whole` is written when `rel` does not exist; otherwise the marked `block` is added or updated."""
        old, entry = self._read(rel), self.entries.get(rel) or self._shared_entry(rel)
        if self._deleted_by_user(rel, old, entry):
            return
        if old is None:
            if whole is None:
                return
            self._write(rel, whole)
            self._change("create", rel)
            self.new_entries[rel] = {"kind": "text", "created": True, "sha256": _sha(whole), "block": _sha(block)}
            return
        created = bool(entry and entry.get("created"))
        if whole is not None and old == whole and created:
            self._change("unchanged", rel)
            self.new_entries[rel] = {"kind": "text", "created": True, "sha256": _sha(whole), "block": _sha(block)}
            return
        if whole is not None and created and _sha(old) == entry["sha256"]:  # type: ignore[index]
            new = whole
            action, detail = "update", "newer packaged version"
        else:
            span = _find_block(old)
            if span is None:
                new = old.rstrip("\n") + "\n\n" + block if old.strip() else block
                action, detail = "append", "mcp_prism section added between mcp-prism markers"
            elif old[span[0]:span[1]] == block:
                new, action, detail = old, "unchanged", ""
            elif entry is not None and _sha(old[span[0]:span[1]]) == entry.get("block"):
                new = old[:span[0]] + block + old[span[1]:]
                action, detail = "update", "mcp_prism section updated"
            else:
                self._change("keep", rel, "the mcp_prism section was edited; left as it is")
                if entry is not None:
                    self.new_entries[rel] = entry
                return
        if new != old:
            self._write(rel, new)
        self._change(action, rel, detail)
        # The whole-file hash stays the one of the file as we wrote it: once the user has edited it, only
        # our block is ours to update or remove.
        whole_sha = _sha(new) if (action == "update" and new == whole) or entry is None else entry["sha256"]
        self.new_entries[rel] = {"kind": "text", "created": created, "sha256": whole_sha, "block": _sha(block)}

    # ---------------------------------------------------------------- JSON configs
    def json_keys(self, rel: str, values: dict[tuple[str, ...], Any], *, new_file_head: dict[str, Any]) -> None:
        """Merge `values` (key path -> value) into the JSON object in `rel`, keeping every other key."""
        old_text = self._read(rel)
        entry = self.entries.get(rel) or {}
        if self._deleted_by_user(rel, old_text, entry):
            return
        owned: dict[str, Any] = dict(entry.get("keys", {}))
        created = bool(entry.get("created")) or old_text is None
        if created:  # a file we created also carries its head keys (OpenCode's `$schema`)
            values = {**{(k,): v for k, v in new_file_head.items()}, **values}
        if old_text is None:
            data: dict[str, Any] = {}
        else:
            try:
                data = json.loads(old_text)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{self.project / rel} is not valid JSON ({e.msg} at line {e.lineno}); fix it (or "
                                   "remove comments) and run the command again, or add these keys by hand: "
                                   + json.dumps({"/".join(k): v for k, v in values.items()})) from None
            if not isinstance(data, dict):
                raise InvalidInput(f"{self.project / rel} must hold a JSON object; fix it and run the command again")
        keys: dict[str, Any] = {}
        for path, value in values.items():
            name = "/".join(path)
            current, mine = _get(data, path), owned.pop(name, None)
            if current is _MISSING:
                parents = self._set(data, path, value)
                if parents is None:
                    self._change("keep", rel, f"{name}: a parent key is not an object; add it by hand")
                    continue
                keys[name] = {"sha256": _json_sha(value), "parents": parents}
                self._change("merge" if old_text is not None else "create", rel, f"added {name}")
            elif current == value:
                if mine is not None:
                    keys[name] = {**mine, "sha256": _json_sha(value)}
                self._change("unchanged", rel, name)
            elif mine is not None and _json_sha(current) == mine["sha256"]:
                self._set(data, path, value)
                keys[name] = {**mine, "sha256": _json_sha(value)}
                self._change("update", rel, f"updated {name}")
            else:
                why = "edited since mcp-prism wrote it" if mine else "already set by you"
                self._change("keep", rel, f"{name}: {why}; left as it is")
                if mine is not None:
                    keys[name] = mine
        for name, mine in owned.items():  # written by an earlier install, no longer wanted
            self._drop_key(rel, data, name, mine)
        if old_text is None or json.loads(old_text) != data:
            self._write(rel, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        # Recorded even when empty, so remove_stale does not process this file a second time.
        self.new_entries[rel] = {"kind": "json", "created": created, "keys": keys}

    @staticmethod
    def _set(data: dict[str, Any], path: Sequence[str], value: Any) -> list[str] | None:
        """Set a nested key; return the parent paths it created, or None if a parent is not an object."""
        node, created = data, []
        for i, key in enumerate(path[:-1]):
            if key not in node:
                node[key] = {}
                created.append("/".join(path[:i + 1]))
            node = node[key]
            if not isinstance(node, dict):
                return None
        node[path[-1]] = value
        return created

    def _drop_key(self, rel: str, data: dict[str, Any], name: str, mine: dict[str, Any]) -> bool:
        path = name.split("/")
        current = _get(data, path)
        if current is _MISSING:
            self._change("unchanged", rel, f"{name} already gone")
            return True
        if _json_sha(current) != mine["sha256"]:
            self._change("keep", rel, f"{name}: edited since mcp-prism wrote it; left as it is")
            return False
        parent = _get(data, path[:-1]) if len(path) > 1 else data
        del parent[path[-1]]
        for p in sorted(mine.get("parents", []), key=lambda s: -s.count("/")):  # deepest first
            node = _get(data, p.split("/"))
            if node == {}:
                outer = _get(data, p.split("/")[:-1]) if "/" in p else data
                del outer[p.split("/")[-1]]
        self._change("remove", rel, f"removed {name}")
        return True

    # ---------------------------------------------------------------- leftovers and uninstall
    def remove_stale(self) -> None:
        """Entries an earlier install wrote that this plan no longer wants (e.g. a renamed command)."""
        for rel, entry in self.entries.items():
            if rel not in self.new_entries:
                self._remove(rel, entry)

    def remove_all(self) -> None:
        for rel, entry in self.entries.items():
            self._remove(rel, entry)

    def _remove(self, rel: str, entry: dict[str, Any]) -> None:
        others = self._others(rel)
        if others:
            self._change("keep", rel, f"still installed for {', '.join(others)}")
            return
        old = self._read(rel)
        if old is None:
            self._change("unchanged", rel, "already gone")
            return
        if entry["kind"] == "json":
            try:
                data = json.loads(old)
            except json.JSONDecodeError:
                self._change("keep", rel, "no longer valid JSON; remove the mcp-prism keys by hand")
                return
            if not isinstance(data, dict):
                self._change("keep", rel, "no longer a JSON object; left as it is")
                return
            for name, mine in entry["keys"].items():
                self._drop_key(rel, data, name, mine)
            if entry.get("created") and not data:
                self._write(rel, None)
                self._change("remove", rel, "created by mcp-prism, now empty")
            elif data != json.loads(old):
                self._write(rel, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            return
        if _sha(old) == entry["sha256"] and (entry["kind"] == "file" or entry.get("created")):
            self._write(rel, None)
            self._change("remove", rel)
            return
        if entry["kind"] == "text":
            span = _find_block(old)
            if span and _sha(old[span[0]:span[1]]) == entry.get("block"):
                rest = _remove_block(old, span)
                self._write(rel, None if entry.get("created") and not rest.strip() else rest)
                self._change("remove", rel, "removed the mcp_prism section; the rest of the file is kept")
                return
            if span:
                self._change("keep", rel, "the mcp_prism section was edited since install; remove it by hand")
                return
            self._change("unchanged", rel, "no mcp_prism section left")
            return
        self._change("keep", rel, "edited since mcp-prism installed it; delete it yourself if unwanted")

    # ---------------------------------------------------------------- manifest and writing
    def _load_manifest(self) -> dict[str, Any]:
        path = self._confine(MANIFEST)
        if not path.is_file():
            return {"format": MANIFEST_FORMAT, "tools": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInput(f"{path} is damaged; restore it from version control, or delete it (mcp-prism then "
                               "treats every file as yours and will not remove any)") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(
                data.get("tools"), dict):
            raise InvalidInput(f"{path} was written by another mcp-prism version (format {data.get('format')!r}); "
                               "upgrade mcp-prism or delete the file")
        return data

    def finish(self, settings: dict[str, Any] | None) -> None:
        """Record this plan in the manifest (or drop the tool when `settings` is None) and write it all."""
        tools = dict(self.manifest["tools"])
        if settings is None:
            tools.pop(self.tool, None)
        else:
            dirs = sorted(set(self.manifest["tools"].get(self.tool, {}).get("dirs", [])) | set(self.new_dirs))
            files = {rel: e for rel, e in sorted(self.new_entries.items()) if e["kind"] != "json" or e["keys"]}
            tools[self.tool] = {**settings, "files": files, "dirs": dirs}
            for other, val in tools.items():  # a shared file (AGENTS.md) has one current hash for all owners
                if other != self.tool:
                    val["files"] = {rel: self.new_entries.get(rel, e) if e.get("kind") == "text" else e
                                    for rel, e in val.get("files", {}).items()}
        manifest_text = json.dumps({"format": MANIFEST_FORMAT, "tools": dict(sorted(tools.items()))},
                                   indent=2, ensure_ascii=False) + "\n"
        if tools:
            if self._read(MANIFEST) != manifest_text:
                self._write(MANIFEST, manifest_text)
        elif (self.project / MANIFEST).exists():
            self._write(MANIFEST, None)
        if self.dry_run:
            return
        for rel in self.writes:  # checked again right before writing: links may have appeared since planning
            self._confine(rel)
        for rel, text in self.writes.items():
            path = self.project / rel
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        if settings is None or not tools:
            self._prune_dirs(tools)

    def _prune_dirs(self, tools: dict[str, Any]) -> None:
        """Remove the folders this tool's install created, if now empty (deepest first)."""
        kept = {d for val in tools.values() for d in val.get("dirs", [])}
        mine = set(self.manifest["tools"].get(self.tool, {}).get("dirs", [])) | {".mcp-prism"}
        for rel in sorted(mine - kept, key=lambda d: -d.count("/")):
            path = self.project / rel
            if Path(os.path.realpath(path)).is_relative_to(self.project) and path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def result(self, **kw: Any) -> InstallResult:
        return InstallResult(tool=self.tool, project=str(self.project), dry_run=self.dry_run, changes=self.changes,
                             notes=self.notes, **kw)


# ==================================================================== which model each agent and command runs on
# A rule's models in order (primary, then fallbacks), each (model name, catalog provider), by task type:
# what `mcp-prism install` and `mcp-prism sync` write into the `model:` frontmatter.
RuleModels = dict[str, list[tuple[str, str]]]
# Catalog providers OpenCode knows by the same id (models.dev ids); others have no built-in provider.
OPENCODE_PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "google": "google", "mistral": "mistral",
                      "deepseek": "deepseek", "xai": "xai", "groq": "groq"}


def claude_model(task_type: str | None, models: RuleModels | None) -> str | None:
    """Claude Code runs Anthropic models only: the rule's first Anthropic model (full id), else the
    tier's alias (haiku/sonnet/opus)."""
    if not task_type:
        return None
    for name, provider in (models or {}).get(task_type, []):
        if provider == "anthropic":
            return name
    tier = _task_tiers().get(task_type)
    return CLAUDE_TIER_MODELS[tier] if tier is not None else None


def opencode_model(task_type: str | None, models: RuleModels | None, *, gateway: bool, pin: bool) -> str | None:
    """OpenCode's `provider/model`: through the gateway its task alias (follows the rule by itself);
    with `pin`, the rule's first model of a provider OpenCode has built in; otherwise none (the session's)."""
    if not task_type:
        return None
    if gateway:
        return f"{PROVIDER_ID}/prism/{task_type}"
    if pin:
        for name, provider in (models or {}).get(task_type, []):
            if provider in OPENCODE_PROVIDERS:
                return f"{OPENCODE_PROVIDERS[provider]}/{name}"
    return None


async def rule_models(svc: Any) -> RuleModels:
    """The models of every rule in force, read through the service (canonical names and providers)."""
    out: RuleModels = {}
    for task_type, active in (await svc.rules(fresh=True)).items():
        rule = active.rule
        names = [rule.primary, *rule.fallbacks]
        out[task_type] = [(n, svc.catalog.resolve(n).provider) for n in names]
    return out


# ==================================================================== what each tool gets
def _opencode_agent(doc: Doc, model: str | None) -> str:
    meta: dict[str, Any] = {"description": doc.meta["description"], "mode": "subagent"}
    if model:
        meta["model"] = model
    tools = {t.strip() for t in str(doc.meta.get("tools", "")).split(",")}
    if not tools & {"Edit", "Write", "MultiEdit"}:
        meta["permission"] = {"edit": "deny"}
    return render_frontmatter(meta, doc.body)


def _claude_agent(doc: Doc, models: RuleModels | None = None) -> str:
    meta = dict(doc.meta)
    model = claude_model(doc.task_type, models)
    if model is not None:
        meta["model"] = model
    return render_frontmatter(meta, doc.body)


def _with_model(doc: Doc, model: str | None) -> str:
    """A command with its task's model in the frontmatter (Claude Code and OpenCode both read `model:`)."""
    if not model:
        return doc.text
    return render_frontmatter({**doc.meta, "model": model}, doc.body)


def _gateway_provider(gateway: str, task_types: Iterable[str]) -> dict[str, Any]:
    models: dict[str, Any] = {"auto": {"name": "mcp-prism: auto (classified per request)", "tool_call": True}}
    for t in sorted(task_types):
        models[f"prism/{t}"] = {"name": f"mcp-prism: {t}", "tool_call": True}
    return {
        "npm": "@ai-sdk/openai-compatible",
        "name": "mcp-prism gateway",
        "options": {"baseURL": _gateway_root(gateway) + "/v1", "apiKey": "{env:PRISM_API_KEY}"},
        "models": models,
    }


def install(project: Path | str, tool: str, *, template: str | None = None, gateway: str | None = None,
            mcp_command: Sequence[str] | None = None, task_types: Iterable[str] | None = None,
            dry_run: bool = False, toolsets: Iterable[str] | str | None = None, models: RuleModels | None = None,
            pin_models: bool | None = None, refresh: bool = False) -> InstallResult:
    """Install the skills package for `tool` (opencode | claude) into `project`. Idempotent.

    `toolsets`: MCP toolsets the server entry turns on besides core (PRISM_TOOLSETS in its environment).
    `models`: the rules' models (`rule_models`); Claude Code agents and commands get their task's model,
    OpenCode ones the gateway alias with `gateway`, or with `pin_models` the rule's `provider/model`.
    `toolsets` and `pin_models` left as None keep what an earlier install recorded. `refresh` (sync):
    files the user deleted since are not put back."""
    inst = Installer(Path(project), tool, dry_run=dry_run, refresh=refresh)
    previous = inst.manifest["tools"].get(tool, {})
    if toolsets is None:
        toolsets = previous.get("toolsets") or ()
    if pin_models is None:
        pin_models = bool(previous.get("pin_models"))
    if template is not None and template not in TEMPLATES:
        raise InvalidInput(f"unknown template {template!r}; use one of: {', '.join(TEMPLATES)}")
    if gateway is not None:
        gateway = _gateway_root(gateway)
    extra = [t for t in mcp_toolsets.parse(toolsets, "--toolsets") if t != mcp_toolsets.CORE]
    command = list(mcp_command) if mcp_command else default_mcp_command()
    task_types = sorted(task_types) if task_types is not None else [t.name for t in BUILTIN_TASK_TYPES]
    base = TOOL_DIRS[tool]

    def model_for(task_type: str | None) -> str | None:
        if tool == "claude":
            return claude_model(task_type, models) if models is not None else None  # None: shipped text
        return opencode_model(task_type, models, gateway=gateway is not None, pin=pin_models)

    for name, doc in commands().items():
        inst.file(f"{base}/commands/{name}.md", _with_model(doc, model_for(doc.task_type)))
    for name, doc in skills().items():
        inst.file(f"{base}/skills/{name}/SKILL.md", doc.text)
    for name, doc in agents().items():
        text = (_opencode_agent(doc, model_for(doc.task_type)) if tool == "opencode"
                else _claude_agent(doc, models))
        inst.file(f"{base}/agents/{name}.md", text)
    _model_notes(inst, tool, models, gateway=gateway is not None, pin=pin_models)

    # Instructions: keep the file the tool already reads; create AGENTS.md (+ CLAUDE.md pointer) otherwise.
    # One section per project: it mentions the gateway when any tool here was installed with one, so
    # installing the other tool without --gateway does not flip it back and forth.
    recorded = [v.get("gateway") for t, v in inst.manifest["tools"].items() if t != tool and v.get("gateway")]
    block = section_block(gateway or (recorded[0] if recorded else None))
    has_agents, has_claude = inst._read("AGENTS.md") is not None, inst._read("CLAUDE.md") is not None
    # The template recorded by an earlier run wins over a new guess, so a re-run never swaps templates.
    chosen = template or previous.get("template") or guess_template(inst.project)
    whole = template_text(chosen).replace(section_block(), block)
    if tool == "opencode" and not has_agents and has_claude:
        inst.instructions("CLAUDE.md", None, block)  # OpenCode reads CLAUDE.md when there is no AGENTS.md
    elif tool == "claude" and has_claude and not ("@AGENTS.md" in (inst._read("CLAUDE.md") or "") and has_agents):
        inst.instructions("CLAUDE.md", None, block)  # Claude Code reads only CLAUDE.md when it exists
    else:
        inst.instructions("AGENTS.md", whole, block)
        if tool == "claude":
            pointer = (bundle() / "agents_templates" / "CLAUDE.md").read_text(encoding="utf-8")
            inst.file("CLAUDE.md", pointer)
    used_template = chosen if inst.new_entries.get("AGENTS.md", {}).get("created") else None
    if template and used_template is None:
        inst.notes.append(f"--template {template} not used: the project already has its instructions file, "
                          "so only the mcp_prism section was added to it")

    env = {mcp_toolsets.ENV: ",".join(extra)} if extra else {}
    if tool == "opencode":
        server: dict[str, Any] = {"type": "local", "command": command, "enabled": True}
        if env:
            server["environment"] = env
        values: dict[tuple[str, ...], Any] = {("mcp", SERVER_NAME): server}
        if gateway:
            values[("provider", PROVIDER_ID)] = _gateway_provider(gateway, task_types)
            values[("model",)] = f"{PROVIDER_ID}/auto"
        inst.json_keys("opencode.json", values, new_file_head={"$schema": OPENCODE_SCHEMA})
    else:
        values = {("mcpServers", SERVER_NAME): {"command": command[0], "args": command[1:], "env": env}}
        inst.json_keys(".mcp.json", values, new_file_head={})
    inst.remove_stale()

    if tool == "opencode" and gateway:
        inst.notes.append(f"OpenCode sends this project's requests to the gateway at {gateway}/v1 (model "
                          f"`{PROVIDER_ID}/auto`; /review and the other commands use `{PROVIDER_ID}/prism/<task>`). "
                          "Start it with `mcp-prism gateway` and put your virtual key (`mcp-prism keys create "
                          "--team T`) in PRISM_API_KEY; a local `mcp-prism gateway --no-auth` needs none.")
    if tool == "claude":
        inst.notes.append("Claude Code asks once to approve the project's MCP server `prism` (.mcp.json).")
        if gateway:
            inst.notes.append(f"To send Claude Code's requests through the gateway, set ANTHROPIC_BASE_URL={gateway} "
                              "and ANTHROPIC_AUTH_TOKEN=<your virtual key from `mcp-prism keys create`> before "
                              "starting `claude` (a local `mcp-prism gateway --no-auth` needs no key).")
    if any(c.path == "AGENTS.md" and c.action == "create" for c in inst.changes):
        inst.notes.append(f"AGENTS.md was created from the {chosen} template: fill in its <...> placeholders.")
    inst.finish({"template": used_template, "gateway": gateway, "mcp_command": command, "toolsets": extra,
                 "pin_models": pin_models})
    return inst.result(template=used_template, gateway=gateway)


def _model_notes(inst: Installer, tool: str, models: RuleModels | None, *, gateway: bool, pin: bool) -> None:
    """Say where an agent or command could not get its rule's model, and how to change that."""
    tasks = sorted({d.task_type for d in [*commands().values(), *agents().values()] if d.task_type})
    if tool == "claude" and models is not None:
        off = [f"{t} ({models[t][0][0]})" for t in tasks
               if t in models and claude_model(t, models) in CLAUDE_TIER_MODELS.values()]
        if off:
            inst.notes.append(f"Claude Code runs Anthropic models only: {', '.join(off)} run on the tier's Claude "
                              "model (haiku/sonnet/opus) instead; to reach the rule's model, send Claude Code through "
                              "the mcp-prism gateway with header routing (X-Prism-Task)")
    elif tool == "opencode" and not gateway and not pin:
        inst.notes.append("OpenCode runs the commands and agents on the session's model: add --pin-models to write "
                          "each rule's provider/model into them (OpenCode needs those providers), or --gateway "
                          "to route them through the mcp-prism gateway")
    elif tool == "opencode" and pin and models is not None and not gateway:
        off = [t for t in tasks if opencode_model(t, models, gateway=False, pin=True) is None]
        if off:
            inst.notes.append(f"no OpenCode provider for the models of {', '.join(off)}: those run on the session's "
                              "model")


def uninstall(project: Path | str, tool: str, *, dry_run: bool = False) -> InstallResult:
    """Remove what `install` added for `tool`; files and keys edited since are kept and reported."""
    inst = Installer(Path(project), tool, dry_run=dry_run)
    if tool not in inst.manifest["tools"]:
        raise InvalidInput(f"nothing to uninstall: no `mcp-prism install {tool}` is recorded in {inst.project} "
                           f"({MANIFEST} lists what was installed); pass --dir with the project you installed into")
    inst.remove_all()
    inst.finish(None)
    kept = [c for c in inst.changes if c.action == "keep"]
    if kept:
        inst.notes.append(f"{len(kept)} item(s) kept because they changed since install or are still used; "
                          "review them and delete by hand if unwanted.")
    result = inst.result()
    result.uninstall = True
    return result


# ==================================================================== CLI
def _mcp_command_arg(value: str) -> list[str]:
    parts = shlex.split(value)
    if not parts:
        raise argparse.ArgumentTypeError("--mcp-command needs a command, like 'mcp-prism serve'")
    return parts


async def cmd_install(svc: Any, a: argparse.Namespace) -> tuple[InstallResult, str]:
    from mcp_prism import install_sync

    task_types = getattr(svc, "task_types", None)  # team task types from the config get gateway aliases too
    r = install(a.dir, a.tool, template=a.template, gateway=a.gateway, mcp_command=a.mcp_command,
                task_types=list(task_types) if task_types else None, dry_run=a.dry_run, toolsets=a.toolsets,
                models=await rule_models(svc), pin_models=a.pin_models)
    if not a.dry_run:  # `mcp-prism sync` (and every rule change) refreshes the models written here
        install_sync.remember(svc.settings.home, Path(r.project), a.tool)
    return r, render_result(r)


async def cmd_uninstall(svc: Any, a: argparse.Namespace) -> tuple[InstallResult, str]:
    from mcp_prism import install_sync

    r = uninstall(a.dir, a.tool, dry_run=a.dry_run)
    if not a.dry_run:
        install_sync.forget(svc.settings.home, Path(r.project), a.tool)
    return r, render_result(r)


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """`install` and `uninstall`: handlers `async (svc, args) -> (InstallResult, markdown)`."""
    p = add("install", "install mcp_prism's commands, skills, agents, AGENTS.md and MCP config into a project "
                       "for OpenCode or Claude Code (merges; never overwrites your files)")
    p.add_argument("tool", choices=TOOLS, help="the agent to install for")
    p.add_argument("--dir", default=".", metavar="PROJECT", help="the project folder (default: the current one)")
    p.add_argument("--template", choices=TEMPLATES, default=None,
                   help="AGENTS.md template when the project has none (default: guessed from the project's files)")
    p.add_argument("--gateway", metavar="URL", default=None,
                   help="the mcp-prism gateway's URL (e.g. http://127.0.0.1:4000): OpenCode gets a `prism` provider "
                        "whose models are the gateway's task aliases; Claude Code is told the ANTHROPIC_BASE_URL")
    p.add_argument("--mcp-command", type=_mcp_command_arg, default=None, metavar="CMD",
                   help="how the agent starts the MCP server (default: this Python, `-m mcp_prism serve`; "
                        "use 'mcp-prism serve' for a config shared by people with mcp-prism on their PATH)")
    p.add_argument("--toolsets", metavar="NAMES", default=None,
                   help="MCP toolsets the agent gets besides the core ones (route, record, cost report), "
                        "comma-separated: rules, loop, data, team, or all (e.g. loop,rules for the qualify-model "
                        "skill; `core` for none); written as PRISM_TOOLSETS in the MCP server entry (default: "
                        "what an earlier install here chose)")
    p.add_argument("--pin-models", action=argparse.BooleanOptionalAction, default=None,
                   help="OpenCode without --gateway: write each rule's provider/model into the commands and agents "
                        "(OpenCode must have those providers); Claude Code always gets its rule's model "
                        "(default: what an earlier install here chose)")
    p.add_argument("--dry-run", action="store_true", help="list the changes; write nothing")
    p.set_defaults(handler=cmd_install)

    p = add("uninstall", "remove what `mcp-prism install` added to a project (files you edited are kept)")
    p.add_argument("tool", choices=TOOLS, help="the agent to uninstall for")
    p.add_argument("--dir", default=".", metavar="PROJECT", help="the project folder (default: the current one)")
    p.add_argument("--dry-run", action="store_true", help="list the changes; write nothing")
    p.set_defaults(handler=cmd_uninstall)
