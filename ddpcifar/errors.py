"""User-facing errors: one line, no traceback, non-zero exit."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""

    exit_code = 2


def cli_main(func: F) -> F:
    """Wrap a `main(argv) -> int` so UserError and Ctrl-C become one-line messages."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs) or 0
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]
