"""How the command lines (python -m fgvc.study.train / fgvc.study.grid / fgvc.data) end on a user error.

A user-facing error (a bad parameter, an unknown method or variant, a missing or broken data
root, unreadable images, a missing file) prints one line, ``error: <cause>``, and exits with
status 1, without a traceback; ``--debug`` (anywhere on the command line) or the environment
variable ``FGVC_DEBUG=1`` shows the traceback instead. Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable



class UserError(Exception):
    """An error the user can fix (e.g. unreadable images in a dataset): one line, no traceback."""


USER_ERRORS = (ValueError, TypeError, OSError, UserError)


def one_line(error: BaseException, keep: int = 8) -> str:
    """The error's message on one line. A message of more than `keep` lines (a long list of
    unreadable images, say) keeps its first two lines, the count of the others and its last
    line, which says what to do."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    if len(lines) > keep:
        lines = [*lines[:2], f"... ({len(lines) - 3} more)", lines[-1]]
    return " ".join(lines)


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call `main(argv)`; turn a user-facing error into one line on stderr and status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FGVC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return main(argv)
    try:
        return main(argv)
    except USER_ERRORS as e:
        print(f"error: {one_line(e)} (--debug or FGVC_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
