"""Models, created by name from a registry, saved as safetensors with their spec.

>>> from siba.models import create_model
>>> net = create_model("resnet18", num_classes=10)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import SibaError, first_line
from ..registry import Registry
from ..runtime import load_tensors, save_tensors
from .base import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .fastnet import FastNet
from .resnet import ResNet, resnet18, resnet34
from .vgg import VGG, vgg16, vgg19

MODELS = Registry("model")  # name → constructor f(num_classes, **kw)


def register_model(name: str, description: str = "") -> Callable:
    """Decorator (or call) that adds a model constructor ``f(num_classes, **kw)`` to the registry."""

    def deco(fn: Callable[..., ImageClassifier]) -> Callable[..., ImageClassifier]:
        return MODELS.add(name, fn, description)

    return deco


register_model("resnet18", "ResNet-18, CIFAR 3×3 stem (stem='imagenet' for 7×7 + max-pool)")(resnet18)
register_model("resnet34", "ResNet-34, CIFAR 3×3 stem (stem='imagenet' for 7×7 + max-pool)")(resnet34)
register_model("vgg16", "VGG-16 with batch norm, CIFAR head (head='imagenet' for torchvision's)")(vgg16)
register_model("vgg19", "VGG-19 with batch norm, CIFAR head (head='imagenet' for torchvision's)")(vgg19)
register_model("fastnet", "small airbench-style CNN for fast CPU runs (widths=(stem, w1, w2, w3))")(
    lambda num_classes=10, **kw: FastNet(num_classes, **kw))


def list_models() -> dict[str, str]:
    """Registered model names and one-line descriptions."""
    return MODELS.describe()


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> ImageClassifier:
    """Create a registered model; its spec (name, classes, kwargs) is kept for saving."""
    fn = MODELS.lookup(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise SibaError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    try:
        model = fn(num_classes, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: a negative width
        raise SibaError(f"bad options for model {name!r} ({_jsonable(kwargs)}): {first_line(exc)}") from None
    model.siba_spec = {"arch": name, "num_classes": num_classes, "kwargs": _jsonable(kwargs)}  # type: ignore[attr-defined]
    return model


def _jsonable(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}


def model_spec(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "siba_spec", None)
    if spec is None:
        raise SibaError("this model was not made by siba.models.create_model; its architecture is unknown")
    return dict(spec)


def save_model(model: nn.Module, path: str | os.PathLike, **metadata: Any) -> None:
    """Save weights (safetensors) with the architecture spec and ``metadata`` (JSON)."""
    state = {k: v for k, v in model.state_dict().items()}
    save_tensors(path, state, {"siba_model": model_spec(model), **metadata})


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SibaError(f"model file not found: {path}")
    import json

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise SibaError(f"{path} is not a readable safetensors file: {exc}") from None
    return {k: json.loads(v) for k, v in meta.items()}


def weights_fingerprint(path: str | os.PathLike) -> str:
    """The identity of a saved model's weights (16 hex digits of a SHA-256 over every tensor's name,
    dtype, shape and bytes, and the architecture spec), independent of the file's other metadata."""
    import hashlib
    import json

    tensors, meta = load_tensors(path)
    h = hashlib.sha256(json.dumps(meta.get("siba_model"), sort_keys=True).encode())
    for name, t in sorted(tensors.items()):
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_model_file(path: str | os.PathLike, arch: str, model_args: dict[str, Any], num_classes: int) -> None:
    """A one-line error unless ``path`` holds a siba model of ``arch`` built with ``model_args``
    (compared layer by layer: same parameter names and shapes) for ``num_classes`` classes."""
    spec = read_model_metadata(path).get("siba_model")
    if not isinstance(spec, dict) or "arch" not in spec:
        raise SibaError(f"{path} is not a siba model checkpoint (no architecture recorded)")
    if spec["arch"] != arch:
        raise SibaError(f"{path} holds a {spec['arch']} model, not the {arch} the config names")
    if spec.get("num_classes") != num_classes:
        raise SibaError(f"{path} is a model for {spec.get('num_classes')} classes, but the data has {num_classes}")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    with torch.device("meta"):
        ref = create_model(arch, num_classes, **model_args)
    for k, v in ref.state_dict().items():
        if shapes.get(k) != tuple(v.shape):
            raise SibaError(f"{path} is a {arch} built with {spec.get('kwargs') or 'its defaults'}, not with the "
                            f"config's model_args {model_args or '{}'} ({k}: {shapes.get(k)} vs {tuple(v.shape)})")


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", *,
               expect_arch: str | None = None, expect_classes: int | None = None) -> ImageClassifier:
    """Rebuild a model saved by :func:`save_model` and load its weights."""
    tensors, meta = load_tensors(path)
    spec = meta.get("siba_model")
    if not isinstance(spec, dict) or "arch" not in spec:
        raise SibaError(f"{path} is not a siba model checkpoint (no architecture recorded)")
    if expect_arch is not None and spec["arch"] != expect_arch:
        raise SibaError(f"{path} holds a {spec['arch']} model, not {expect_arch}")
    if expect_classes is not None and spec["num_classes"] != expect_classes:
        raise SibaError(f"{path} is a model for {spec['num_classes']} classes, but the data has {expect_classes}")
    model = create_model(spec["arch"], spec["num_classes"], **spec.get("kwargs", {}))
    load_state(model, tensors, str(path))
    return model.to(device)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str = "checkpoint", *,
               strict: bool = True) -> None:
    """Load ``state`` into ``model`` with a one-line error on any mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong or (strict and (missing or unexpected)):
        detail = (f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}"
                  if wrong else f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}")
        raise SibaError(f"{where} does not fit this {type(model).__name__}: {detail}")
    model.load_state_dict(state, strict=strict)


def read_state_dict(path: str | os.PathLike, what: str = "weights file") -> dict[str, torch.Tensor]:
    """The tensors of a torchvision ``.pth``/``.pt`` (``weights_only``: no code runs; a ``state_dict``
    wrapped in a checkpoint mapping is unwrapped) or a safetensors file; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise SibaError(f"{what} not found: {path} is not a file")
    if path.suffix == ".safetensors":
        return load_tensors(path)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SibaError(f"cannot read {path} as a weights-only checkpoint: {first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise SibaError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return state


def load_weights(model: nn.Module, path: str | os.PathLike, *, skip_classifier: bool = False) -> list[str]:
    """Load foreign weights (a torchvision ``.pth`` or a safetensors file) into ``model``.

    ``.pth``/``.pt`` files load with ``torch.load(weights_only=True)``: no code runs.
    Keys whose shape does not fit (the CIFAR stem, a classifier for another number of
    classes) are skipped and returned when ``skip_classifier`` is true, else an error.
    See :func:`init_from` for the strict form that a training starts from.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k not in own or tuple(v.shape) != tuple(own[k].shape)]
    if skipped and not skip_classifier:
        raise SibaError(f"{path} does not fit this model: {skipped[:3]} differ; pass skip_classifier=True "
                        "to load only the layers that fit")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def init_from(model: ImageClassifier, path: str | os.PathLike) -> dict[str, Any]:
    """Start ``model`` from the weights in ``path`` (e.g. torchvision's ImageNet ResNet-18 or
    VGG-16-BN file): every tensor of the model outside its final linear layer must be in the
    file with the same shape, else a one-line error naming the first that is not; the final
    layer is loaded when it fits (the same number of classes) and otherwise keeps its fresh
    initialisation. Returns ``{"loaded": n, "fresh": [names kept fresh]}``."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = next(name for name, m in model.named_modules() if m is model.classifier_layer())
    in_head = lambda k: k.startswith(head + ".")  # noqa: E731
    arch = getattr(model, "siba_spec", {}).get("arch", type(model).__name__)
    for k, v in own.items():
        if in_head(k):
            continue
        if k not in state:
            raise SibaError(f"{path} does not fit this {arch}: it has no {k} (a file for another architecture?)")
        if tuple(state[k].shape) != tuple(v.shape):
            raise SibaError(f"{path} does not fit this {arch}: {k} is {tuple(state[k].shape)} there, "
                            f"{tuple(v.shape)} here (another width, stem or head?)")
    fits = [k for k in own if k in state and tuple(state[k].shape) == tuple(own[k].shape)]
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in fits}, strict=False)
    return {"loaded": len(fits), "fresh": [k for k in own if k not in fits]}


__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "FastNet", "IMAGENET_MEAN", "IMAGENET_STD", "ImageClassifier", "MODELS",
    "ResNet", "VGG", "create_model", "init_from", "list_models", "load_model", "load_state", "load_weights",
    "model_spec", "read_model_metadata", "read_state_dict", "register_model", "save_model", "check_model_file",
    "weights_fingerprint",
]
