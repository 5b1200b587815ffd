"""Errors that mean "the user asked for something that cannot be done".

The CLI prints a :class:`SibaError` as one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class SibaError(Exception):
    """A user-facing error: bad input, a missing file, an impossible setting."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`SibaError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SibaError(message)
