"""The redirect map of an anchor-corpus build, ``{normalised redirect title: target}``, on disk.

All of English Wikipedia has about 10M redirects, 1-2 GB as a Python dict: the one structure of the
build that grows with the dump. In an SQLite file (one table, the title its primary key) the process
holds only SQLite's page cache (~2 MB) whatever the number of titles. The file is scratch: it is
written with no journal and no fsync, and belongs in the build's temporary folder, so that ``close``
(leaving the ``with`` block) removes it and a killed build's folder is removed whole by the next build.

Titles are stored as UTF-8 bytes with ``surrogatepass``, so any ``str`` a dict accepts is a key here
too, compared exactly as the dict compares it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

# Titles per lookup query: under SQLite's limit on bound parameters (999 before SQLite 3.32).
_TITLES_PER_QUERY = 500
_REPLACE = "INSERT OR REPLACE INTO redirects VALUES (?, ?)"  # a later pair replaces the row
_UPSERT = "INSERT INTO redirects VALUES (?, ?) ON CONFLICT(source) DO UPDATE SET target = excluded.target"


def _key(title: str) -> bytes:
    return title.encode("utf-8", "surrogatepass")


def _title(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


class RedirectStore:
    """``add`` pairs while reading the dump (one transaction for them all); then ``get`` one title,
    or ``targets_of`` many in a few queries. A later pair replaces an earlier one of the same source,
    as ``dict.update`` does. An ``ordered`` store also lists its pairs (``items``) in a dict's order:
    each source where it was first added, with its last target."""

    def __init__(self, path: str | Path, ordered: bool = False):
        self.path = Path(path)
        self.ordered = ordered
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=OFF")  # scratch: a crash loses only a file thrown away
        self._db.execute("PRAGMA synchronous=OFF")
        if ordered:  # a rowid table: the rowid is the first-added order, an upsert keeps it
            self._db.execute("CREATE TABLE redirects (source BLOB PRIMARY KEY, target BLOB NOT NULL)")
            self._insert = _UPSERT
        else:  # the rows in key order: lookups read one B-tree
            self._db.execute(
                "CREATE TABLE redirects (source BLOB PRIMARY KEY, target BLOB NOT NULL) WITHOUT ROWID"
            )
            self._insert = _REPLACE
        self._empty = True
        self._owner = True  # close() removes the file

    @classmethod
    def read_only(cls, path: str | Path) -> RedirectStore:
        """A second connection to a store another process filled and committed (a pass-2 worker):
        it only reads, and ``close`` leaves the file to its owner."""
        store = cls.__new__(cls)
        store.path = Path(path)
        store.ordered = False
        store._insert = _REPLACE  # refused: the file is read-only
        store._db = sqlite3.connect(store.path.resolve().as_uri() + "?mode=ro", uri=True)
        store._empty = False
        store._owner = False
        return store

    def add(self, pairs: Iterable[tuple[str, str]]) -> None:
        rows = [(_key(source), _key(target)) for source, target in pairs]
        if rows:
            # the sqlite3 module opens a transaction before the first insert; it stays open until a read
            self._db.executemany(self._insert, rows)
            self._empty = False

    def update(self, mapping: dict[str, str]) -> None:
        """``add`` a dict's pairs, in its order."""
        self.add(mapping.items())

    def items(self) -> Iterator[tuple[str, str]]:
        """Every ``(source, target)`` in a dict's order (an ``ordered`` store only)."""
        if not self.ordered:
            raise TypeError("only an ordered RedirectStore lists its pairs in order")
        for source, target in self._reading().execute("SELECT source, target FROM redirects ORDER BY rowid"):
            yield _title(source), _title(target)

    def __bool__(self) -> bool:
        return not self._empty

    def commit(self) -> None:
        """End the writing transaction: other connections (``read_only``) see the pairs from now on."""
        if self._db.in_transaction:
            self._db.commit()

    def _reading(self) -> sqlite3.Connection:
        self.commit()
        return self._db

    def get(self, title: str) -> str | None:
        row = (
            self._reading()
            .execute("SELECT target FROM redirects WHERE source = ?", (_key(title),))
            .fetchone()
        )
        return None if row is None else _title(row[0])

    def targets_of(self, titles: Iterable[str]) -> dict[str, str]:
        """``{title: its redirect target}`` for those of ``titles`` that are redirects (most are not)."""
        db = self._reading()
        keys = sorted({_key(title) for title in titles})  # in key order, the B-tree is read in one sweep
        found: dict[str, str] = {}
        for start in range(0, len(keys), _TITLES_PER_QUERY):
            batch = keys[start : start + _TITLES_PER_QUERY]
            query = f"SELECT source, target FROM redirects WHERE source IN ({','.join('?' * len(batch))})"
            found.update((_title(source), _title(target)) for source, target in db.execute(query, batch))
        return found

    def close(self) -> None:
        """Close the database and, unless opened ``read_only``, remove its file."""
        self._db.close()
        if self._owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RedirectStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
