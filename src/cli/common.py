"""Shared CLI plumbing: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import sys

from cofee.errors import CofeeError

EXIT_USER_ERROR = 2


@contextlib.contextmanager
def user_errors(program: str):
    try:
        yield
    except CofeeError as exc:
        logging.getLogger(program).debug("user error", exc_info=True)
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
