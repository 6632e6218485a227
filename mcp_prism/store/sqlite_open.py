"""Opening the SQLite file, and what to tell the user when it cannot be used as it is.

Before aiosqlite starts its thread the file is probed with the standard library: a file that is not a
database (or is damaged), a folder that cannot be written, a read-only file. A read-only database still serves
reports (opened `mode=ro`, or `immutable=1` when its folder cannot hold WAL's shared-memory file); writes to it
fail with a message that says so instead of "stayed busy".
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from mcp_prism.errors import StoreError

DAMAGED = ("file is not a database", "malformed", "file is encrypted", "disk image")


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(path.resolve()))}?{mode}"


def _readable(uri: str) -> bool:
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
        return True
    except sqlite3.DatabaseError as e:
        if any(d in str(e) for d in DAMAGED):
            raise
        return False


def probe(path: Path) -> tuple[str, bool]:
    """(URI to open, read_only) for the database at `path`; StoreError when it cannot be used at all."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the folder {path.parent} for the database ({e.strerror or e}); "
                         "set PRISM_HOME (or PRISM_DB) to a folder you can write") from None
    writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if not path.exists() and not writable:
        raise StoreError(f"cannot create the database in {path.parent}: the folder is read-only; set PRISM_HOME "
                         "(or PRISM_DB) to a folder you can write")
    modes = ["mode=rwc"] if writable else ["mode=ro", "immutable=1"]
    try:
        for mode in modes:
            if _readable(_uri(path, mode)):
                return _uri(path, mode), not writable
    except sqlite3.DatabaseError as e:
        raise StoreError(damaged(path, e)) from None
    raise StoreError(f"cannot open the database at {path}; check that the file and its folder can be read")


def damaged(path: Path, err: BaseException) -> str:
    return (f"the database at {path} is damaged or is not an mcp_prism database ({err}); move it aside (or "
            "restore a backup) and run again: a new one is created")


def explain(path: Path, err: BaseException, read_only: bool) -> str | None:
    """A message for a database error that is about the file rather than the request, or None."""
    text = str(err)
    if any(d in text for d in DAMAGED):
        return damaged(path, err)
    if read_only or "readonly" in text or "read-only" in text:
        return (f"the database at {path} is read-only ({text}): reports work, but recording or changing "
                "anything needs write access to the file and its folder")
    return None
