"""Device, threads, precision, seeding and atomic file writes."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import SibaError


def cpu_count() -> int:
    """Cores this process may run on (respects affinity masks and cgroups' cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_threads_set = False


def setup_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to the cores we have (oversubscription is ~3x slower).

    ``SIBA_THREADS`` overrides the default. Returns the number of threads used.
    """
    global _threads_set
    if threads is None:
        env = os.environ.get("SIBA_THREADS")
        threads = int(env) if env else cpu_count()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if not _threads_set:
        with contextlib.suppress(RuntimeError):  # may only be set before parallel work starts
            torch.set_num_interop_threads(1)
        _threads_set = True
    return threads


SEED_LIMIT = 2 ** 32  # seeds are whole numbers in [0, 2**32): torch's generators overflow on larger ones


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` if it is a whole number in ``[0, 2**32)``, else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise SibaError(f"{what} must be a whole number in [0, 2**32), got {seed!r}")
    return seed


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:1`` are honoured."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SibaError(f"unknown device {name!r} (use auto, cpu or cuda)") from exc
    if device.type not in ("cpu", "cuda"):
        raise SibaError(f"unknown device {name!r} (use auto, cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SibaError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 matrix products natively (AMX or AVX512-BF16).

    Without them oneDNN emulates bf16 and autocast is *slower* than fp32 (measured 2x
    slower on an AVX512 Ice Lake machine without AVX512-BF16), so we keep fp32 there.
    """
    flags = _cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line error."""
    if precision not in PRECISIONS:
        raise SibaError(f"unknown precision {precision!r} (use auto, bf16 or fp32)")
    return precision


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto``/``bf16``/``fp32`` to what will actually run on ``device``."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision (``bf16`` or ``fp32``)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def cpu_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` on success.

    A crash mid-write leaves the previous file (or none) in place, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SibaError(f"file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise SibaError(f"{path} is not valid JSON: {exc}") from exc


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, Any] | None = None) -> None:
    """Write tensors to a safetensors file atomically; ``metadata`` is stored as JSON strings."""
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file; returns (tensors, metadata decoded from JSON)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SibaError(f"file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise SibaError(f"{path} is not a readable safetensors file: {exc}") from exc
    meta = {}
    for k, v in raw_meta.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settings_digest(settings: Any) -> str:
    """A 16-hex SHA-256 of JSON-able settings (key order does not matter): what a checkpoint records."""
    import hashlib

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def show_setting(value: Any) -> str:
    """A setting's value as an error message quotes it."""
    return value if isinstance(value, str) else "none" if value is None else repr(value)


def setting_difference(key: str, was: Any, now: Any, fingerprints: dict[str, tuple[str, str]] | None = None) -> str:
    """How a checkpoint made with ``key=was`` differs from ``key=now``, as the predicate of a sentence whose
    subject is the checkpoint: ``was made with lr=0.1, not lr=0.2``, ``was made on device cpu, not cuda``,
    or for a key of ``fingerprints`` (key → (phrase, label)) ``was made on other images (fingerprint a vs b)``."""
    if fingerprints and key in fingerprints:
        phrase, label = fingerprints[key]
        return f"was made {phrase} ({label} {show_setting(was)} vs {show_setting(now)})"
    if key == "device":
        return f"was made on device {show_setting(was)}, not {show_setting(now)}"
    return f"was made with {key}={show_setting(was)}, not {key}={show_setting(now)}"


def check_checkpoint_settings(subject: str, state: dict[str, Any], settings: dict[str, Any], redo: str,
                              fingerprints: dict[str, tuple[str, str]] | None = None) -> None:
    """Refuse a checkpoint ``state`` (with ``settings`` and their ``digest``) made with other ``settings``:
    a one-line :class:`SibaError` ``<subject> <first difference>; <redo>`` (keys in ``settings``' order)."""
    old = state["settings"]
    if state.get("digest") == settings_digest(settings) and old == settings:
        return
    for key, now in settings.items():
        if old.get(key) != now:
            raise SibaError(f"{subject} {setting_difference(key, old.get(key), now, fingerprints)}; {redo}")
    raise SibaError(f"{subject} was made with other settings "
                    f"({', '.join(sorted(set(old) ^ set(settings))) or 'digest'}); {redo}")


def cache_dir() -> Path:
    """Where downloads and decoded data sets are cached (``SIBA_CACHE`` or ``~/.cache/siba``)."""
    env = os.environ.get("SIBA_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "siba"
    return base


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """What a result was measured on: CPU model, cores, threads, bf16 support, GPU, torch version."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": cpu_count(), "threads": torch.get_num_threads(),
            "cpu_fast_bf16": cpu_has_fast_bf16(), "gpu": gpu, "device": str(device) if device is not None else None,
            "torch": torch.__version__, "python": platform.python_version()}


def git_revision(where: str | os.PathLike | None = None) -> str | None:
    """The git commit of the siba checkout (``+dirty`` when it has changes), or None outside git."""
    import subprocess

    where = Path(where) if where else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
