"""Attacks and their triggers, found by name in a registry.

>>> from siba.attacks import create_attack
>>> attack = create_attack("siba", k=100, eps="8/255", passes=20)
>>> trigger = attack.generate(data.train, surrogate)        # doctest: +SKIP
"""

from .base import ATTACKS, Attack, create_attack, list_attacks, register_attack
from .blended import Blended
from .issba import ISSBA, EncoderTrigger, StegaDecoder, StegaEncoder, evaluate_issba, fixed_secret, train_issba
from .labels import AllToAll, AllToOne, LabelRule, RandomLabels, make_rule
from .optimize import OptimizeResult, l0_project, l0_support, optimize_trigger, random_mask, topk_mask
from .patch import BadNets, checkerboard
from .sparse import SIBA, TUAP, RandomSparse, Sparse, parse_number
from .trigger import BlendTrigger, Trigger, AdditiveTrigger, load_trigger
from .ubw import UBWP
from .wanet import WaNet, WarpTrigger

__all__ = [
    "ATTACKS", "AllToAll", "AllToOne", "Attack", "BadNets", "BlendTrigger", "Blended", "EncoderTrigger", "ISSBA",
    "LabelRule", "Trigger", "StegaDecoder", "StegaEncoder", "evaluate_issba", "fixed_secret", "train_issba",
    "OptimizeResult", "RandomLabels", "RandomSparse", "SIBA", "Sparse", "TUAP", "AdditiveTrigger", "UBWP", "WaNet",
    "WarpTrigger",
    "checkerboard", "create_attack", "l0_project", "l0_support", "list_attacks", "load_trigger",
    "make_rule", "optimize_trigger", "parse_number", "random_mask", "register_attack", "topk_mask",
]
