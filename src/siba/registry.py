"""One kind of registry for everything siba finds by name: models, attacks, defenses, paper items.

>>> from siba.registry import Registry
>>> SHAPES = Registry("shape")
>>> @SHAPES.register("square", "four equal sides")
... def square(n): return n * n
>>> SHAPES.lookup("square")(3), SHAPES.describe()
(9, {'square': 'four equal sides'})

A :class:`Registry` is a ``dict`` (name → entry) that also keeps a one-line description per name,
refuses a name registered twice, and turns an unknown name into one line that lists the choices.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .errors import SibaError

T = TypeVar("T")


class Registry(dict):
    """Name → entry, with a description per name. ``kind`` names the entries in messages."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.descriptions: dict[str, str] = {}

    def add(self, name: str, entry: Any, description: str = "") -> Any:
        """Register ``entry`` under ``name`` (a programming error if the name is taken); returns the entry."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a name, got {name!r}")
        if name in self and self[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry
        self.descriptions[name] = description or _first_doc_line(entry)
        return entry

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            self.add(name, entry, description)
            return entry

        return deco

    def lookup(self, name: Any) -> Any:
        """The entry of ``name``; an unknown name is a one-line :class:`SibaError` listing the choices."""
        if not isinstance(name, str) or name not in self:
            raise SibaError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self))}")
        return self[name]

    def describe(self) -> dict[str, str]:
        """Names (sorted) and their one-line descriptions."""
        return {name: self.descriptions.get(name, "") for name in sorted(self)}


def _first_doc_line(entry: Any) -> str:
    doc = (getattr(entry, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
