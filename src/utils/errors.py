"""User-facing errors: one line that names the file and line, or the config key, at fault."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


class CofeeError(Exception):
    """An error caused by the user's input; the CLI prints it on one line and exits non-zero."""


class InputFileError(CofeeError):
    """Bad content in an input file (dump, corpus shard, gazetteer, CoNLL file, checkpoint)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # picklable, so an error raised in a worker process reaches the parent intact
        return (type(self), (self.path, self.message, self.line))


class ConfigError(CofeeError):
    """A wrong config key or value; the message names the full key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"config key '{key}': {message}")

    def __reduce__(self):
        return (type(self), (self.key, self.message))


EXIT_USER_ERROR = 2


@contextlib.contextmanager
def user_errors(program: str):
    try:
        yield
    except CofeeError as exc:
        logging.getLogger(program).debug("user error", exc_info=True)
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
