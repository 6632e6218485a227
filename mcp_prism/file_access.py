"""Which files a remote caller may make the server read (MCP tools that take a path).

The CLI reads whatever its user can; an MCP client is another party, so the MCP server reads files only under
its roots: `[mcp] file_roots` in the config file, or by default the working directory and PRISM_HOME over stdio
(the client runs as the same user, in the project) and nothing at all over HTTP (a remote client must not make a
team server read its disk). Paths are resolved (symlinks followed) before the check, and errors name the path
and the roots, never what a file holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp_prism.errors import InvalidInput
from mcp_prism.limits import PATH_MAX, clip


@dataclass(frozen=True, slots=True)
class FileRoots:
    roots: tuple[Path, ...]

    @classmethod
    def of(cls, paths: Sequence[str | Path]) -> FileRoots:
        return cls(tuple(Path(p).expanduser().resolve() for p in paths))

    @classmethod
    def for_transport(cls, configured: Sequence[str] | None, *, http: bool, home: Path) -> FileRoots:
        if configured is not None:
            return cls.of(configured)
        return cls(()) if http else cls.of([os.getcwd(), home])

    def check(self, path: str | Path) -> Path:
        """The resolved path, if it lies under a root; InvalidInput otherwise."""
        text = str(path)
        if "\x00" in text or len(text) > PATH_MAX:
            raise InvalidInput(f"path {clip(text, 60)} is not a usable file name")
        if not self.roots:
            raise InvalidInput("this MCP server reads no files (over HTTP none by default): put the file under a "
                               "folder listed in [mcp] file_roots of the server's config file, or use the CLI")
        resolved = Path(text).expanduser()
        if not resolved.is_absolute():
            resolved = self.roots[0] / resolved
        resolved = resolved.resolve()
        if not any(resolved == r or resolved.is_relative_to(r) for r in self.roots):
            raise InvalidInput(f"{clip(text, 200)} is outside the folders this MCP server may read "
                               f"({', '.join(str(r) for r in self.roots)}); move the file there or add its "
                               "folder to [mcp] file_roots in the server's config file")
        return resolved
