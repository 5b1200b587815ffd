"""Pictures of triggers for the report (each trigger draws itself: ``Trigger.visual`` and ``Trigger.render``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..attacks.trigger import Trigger


def trigger_visual(mark: "Trigger") -> torch.Tensor:
    """The trigger as a C×H×W image (see :meth:`Trigger.visual`)."""
    return mark.visual()


def render_trigger(mark: "Trigger", path: str | os.PathLike, samples: torch.Tensor | None = None,
                   scale: int = 4, max_samples: int = 4) -> Path:
    """The trigger's PNG (see :meth:`Trigger.render`)."""
    return mark.render(path, samples, scale, max_samples)
