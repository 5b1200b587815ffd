"""Attacks and their triggers, found by name in a registry.

>>> from siba.attacks import create_attack
>>> attack = create_attack("siba", k=100, eps="8/255", passes=20)
>>> trigger = attack.generate(data.train, surrogate)        # doctest: +SKIP
"""

from .base import ATTACKS, Attack, create_attack, list_attacks, register_attack
from .optimize import OptimizeResult, l0_project, l0_support, optimize_trigger, random_mask, topk_mask
from .patch import BadNets, checkerboard
from .sparse import SIBA, TUAP, RandomSparse, Sparse, parse_number
from .trigger import BlendTrigger, Mark, Trigger, load_trigger

__all__ = [
    "ATTACKS", "Attack", "BadNets", "BlendTrigger", "Mark", "OptimizeResult", "RandomSparse", "SIBA", "Sparse",
    "TUAP", "Trigger", "checkerboard", "create_attack", "l0_project", "l0_support", "list_attacks", "load_trigger",
    "optimize_trigger", "parse_number", "random_mask", "register_attack", "topk_mask",
]
