"""How the command lines (python -m fgvc.train / fgvc.grid / fgvc.data) end on a user error.

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

from .data.base import CorruptImagesError

USER_ERRORS = (ValueError, TypeError, OSError, CorruptImagesError)


def one_line(error: BaseException) -> str:
    """The error's message on one line: a multi-line message keeps its first and last lines
    (e.g. "3 unreadable image(s): ... set data.skip_bad_images: true ...")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    if len(lines) > 2:
        return f"{lines[0]} {lines[1]} ... ({len(lines) - 3} more) {lines[-1]}" if len(lines) > 3 \
            else f"{lines[0]} {lines[1]} {lines[2]}"
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
