"""Reading append-only JSONL logs from a byte offset: only complete lines, so a line the agent is still
writing is read next time, whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

CHUNK = 8 << 20


def complete_lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset after the line, line without its newline) for each complete line from `start`."""
    with path.open("rb") as f:
        f.seek(start)
        pos, rest = start, b""
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            for line in data[:cut].split(b"\n"):
                pos += len(line) + 1
                yield pos, line


def lines_before(path: Path, end: int, limit: int = 1 << 20) -> list[bytes]:
    """The complete lines in the last `limit` bytes before `end` (context for a resumed read)."""
    begin = max(0, end - limit)
    with path.open("rb") as f:
        f.seek(begin)
        data = f.read(end - begin)
    lines = data.split(b"\n")
    if begin > 0:
        lines = lines[1:]  # the first is cut
    return [x for x in lines if x]
