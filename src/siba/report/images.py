"""Pictures of triggers for the report (each trigger draws itself: ``Mark.visual`` and ``Mark.render``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..attacks.trigger import Mark


def trigger_visual(mark: "Mark") -> torch.Tensor:
    """The trigger as a C×H×W image (see :meth:`Mark.visual`)."""
    return mark.visual()


def render_trigger(mark: "Mark", path: str | os.PathLike, samples: torch.Tensor | None = None,
                   scale: int = 4, max_samples: int = 4) -> Path:
    """The trigger's PNG (see :meth:`Mark.render`)."""
    return mark.render(path, samples, scale, max_samples)
