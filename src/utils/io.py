"""Atomic writes and content hashes: nothing half-written is ever left where a reader looks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict key order."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    from cofee.utils.errors import InputFileError

    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None


STALE_TEMP_SECONDS = 24 * 3600  # a temp folder no live process owns is stale after a day untouched
_TEMP_OWNER_RE = re.compile(r"^(?P<host>[A-Za-z0-9_-]*)-(?P<pid>\d+)\.[A-Za-z0-9_]+$")
_TEMP_LEGACY_RE = re.compile(r"^[a-z0-9_]{8}$")  # tempfile.mkdtemp's own names, before owners were named


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's live process, or we cannot tell: alive
    return True


def _last_touched(folder: Path) -> float:
    """The newest modification time of `folder` and its direct entries (a build adds shard files)."""
    newest = folder.stat().st_mtime
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def remove_stale_temp_dirs(final: str | Path, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temporary folders ``.<name>.<host>-<pid>.XXXX.tmp`` of `final` left by dead builds
    (killed, or the machine lost); return them.

    A folder of this host is stale when its pid is no live process (a pid reused since only keeps it,
    never removes a live one); a folder of another host (a shared file system), or one named by the
    code before owners were named, when nothing in it changed for `max_age` seconds. A live build's
    folder is never removed: its pid is alive, or it writes files more often than `max_age`.
    """
    final = Path(final)
    prefix = f".{final.name}."
    removed: list[Path] = []
    host = _host_tag()
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp") and entry.is_dir(follow_symlinks=False)):
            continue
        middle = name[len(prefix) : -len(".tmp")]
        owner = _TEMP_OWNER_RE.match(middle)
        path = Path(entry.path)
        try:
            if owner and owner["host"] == host:
                stale = not _pid_alive(int(owner["pid"]))
            elif owner or _TEMP_LEGACY_RE.match(middle):
                stale = now - _last_touched(path) > max_age
            else:
                continue  # not one of ours (another folder's name that starts alike)
        except OSError:
            continue  # gone meanwhile, or unreadable: leave it
        if stale:
            logging.getLogger(__name__).info("removing %s, left by a build that is no longer running", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `final` in one rename.

    On any error the temporary folder is removed and `final`, if it existed, is untouched. The folder
    is named after its owner, ``.<name>.<host>-<pid>.XXXX.tmp``, so that a later build of `final`
    removes those of killed builds first (``remove_stale_temp_dirs``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(final)
    tmp = Path(
        tempfile.mkdtemp(
            prefix=f".{final.name}.{_host_tag()}-{os.getpid()}.", suffix=".tmp", dir=final.parent
        )
    )
    try:
        yield tmp
        if final.exists():
            # Keep the old folder until the new one is in place, so a crash never leaves neither.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_marked_block(path: str | Path, name: str) -> None:
    """Raise InputFileError unless `path` exists and holds both `<!-- name:begin/end -->` markers.

    Report writers call it before long work too, so a missing marker fails in seconds, not hours."""
    from cofee.utils.errors import InputFileError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, f"file not found, so its '{name}' block cannot be written")
    text = path.read_text(encoding="utf-8")
    for marker in (f"<!-- {name}:begin -->", f"<!-- {name}:end -->"):
        if marker not in text:
            raise InputFileError(path, f"no '{marker}' marker, so the '{name}' block cannot be written")
    if text.index(f"<!-- {name}:end -->") < text.index(f"<!-- {name}:begin -->"):
        raise InputFileError(path, f"the '{name}:end' marker comes before '{name}:begin'")


def replace_marked_block(path: str | Path, name: str, body: str) -> str:
    """Rewrite the text between `<!-- name:begin -->` and `<!-- name:end -->` in a document, atomically;
    returns the text it replaced.

    Raises InputFileError (and writes nothing) when the file or a marker is missing."""
    check_marked_block(path, name)
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    head, rest = path.read_text(encoding="utf-8").split(begin, 1)
    replaced, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{begin}\n{body}\n{end}{tail}")
    return replaced.strip("\n")
