"""The chunk cache's file: one SQLite database, one row per entry, to ship beside a vector index.

A row holds the entry's identity (every field of ``chunk_cache.EntryKey``, the row id being their digest),
the blob (``kv_pack.serialise``) and the blob's SHA-256. ``read`` returns a blob only when every field
and the checksum match; a row that does not is deleted and reported, so that the caller recomputes it.
The database runs in WAL mode with a busy timeout, so several processes may read and write one file
(SQLite's own locking); within a process one connection is shared under a lock.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def checksum(blob: bytes) -> str:
    """SHA-256 of a blob, hex: what a row keeps to tell a sound blob from a truncated or altered one."""
    return hashlib.sha256(blob).hexdigest()


FIELDS = ("model", "profile", "version", "frame", "text", "ids", "layer")
"""Identity columns of an entry, besides its digest."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    digest TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    profile TEXT NOT NULL,
    version TEXT NOT NULL,
    frame TEXT NOT NULL,
    text TEXT NOT NULL,
    ids TEXT NOT NULL,
    layer INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    dtype TEXT NOT NULL,
    checksum TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    created REAL NOT NULL,
    blob BLOB NOT NULL
)
"""


class ChunkStore:
    """One SQLite file of chunk entries (see the module). ``path`` is created with its table if missing."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(_SCHEMA)

    def write(self, digest: str, fields: Mapping[str, Any], tokens: int, dtype: str, blob: bytes) -> None:
        """Store (or replace) the row of ``digest``."""
        row = (digest, *(fields[f] for f in FIELDS), tokens, dtype, checksum(blob), len(blob), time.time(), blob)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO entries VALUES ({', '.join('?' * len(row))})", row)

    def read(self, digest: str, fields: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
        """(blob, None) for a sound row of ``digest``; (None, None) when there is none; (None, why) when the row
        was made for another identity or its blob fails its checksum (the row is deleted)."""
        with self._lock:
            found = self._db.execute(
                f"SELECT {', '.join(FIELDS)}, checksum, blob FROM entries WHERE digest = ?", (digest,)
            ).fetchone()
        if found is None:
            return None, None
        stored = dict(zip(FIELDS, found[: len(FIELDS)], strict=True))
        wrong = [f for f in FIELDS if stored[f] != fields[f]]
        blob = bytes(found[-1])
        why = None
        if wrong:
            why = f"made for another {wrong[0]}"
        elif checksum(blob) != found[-2]:
            why = "checksum mismatch"
        if why is not None:
            self.delete(digest)
            return None, why
        return blob, None

    def delete(self, digest: str) -> None:
        """Remove the row of ``digest`` (none: nothing happens)."""
        with self._lock:
            self._db.execute("DELETE FROM entries WHERE digest = ?", (digest,))

    def count(self) -> int:
        """Rows in the file."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def size(self) -> int:
        """Bytes of all blobs in the file."""
        with self._lock:
            return int(self._db.execute("SELECT coalesce(sum(nbytes), 0) FROM entries").fetchone()[0])

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self._db.close()
