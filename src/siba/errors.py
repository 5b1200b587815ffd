"""Errors that mean "the user asked for something that cannot be done".

The CLI prints a :class:`SibaError` as one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class SibaError(Exception):
    """A user-facing error: bad input, a missing file, an impossible setting."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch appends its C++ stack to some), or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check(condition: bool, message: str) -> None:
    """Raise :class:`SibaError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SibaError(message)
