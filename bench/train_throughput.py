"""Training throughput: siba's fast path against a conventional pipeline, per model.

    python bench/train_throughput.py [--models fastnet resnet18 ...] [--seconds 20] [--batch-size 128]

Fast path (what siba's trainer does): uint8 images held on the device, one gather per
batch, pad-4 crop and flip done on the whole batch there, ``channels_last``, bf16 autocast
where the hardware computes bf16 natively (CUDA, AMX/AVX512-BF16 CPUs), threads = cores.

Conventional path (what reference scripts do): a per-sample ``Dataset`` that converts one
HWC uint8 image to a float tensor, pads, crops and flips it, batched by a
``torch.utils.data.DataLoader`` (collate), fp32, NCHW memory layout.

Both run the same model, optimiser (SGD, Nesterov) and batch size for a fixed time after
a warm-up; the script prints images/s and writes ``results/train_throughput_<device>.json``.
Where the fast path runs in bf16 it is timed in fp32 too (``fast_fp32_img_s``), so that the
gain of the data path and that of bf16 are told apart.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siba.data import DeviceLoader, load_dataset  # noqa: E402
from siba.models import create_model  # noqa: E402
from siba.runtime import (autocast, cpu_count, cpu_has_fast_bf16, pick_device, resolve_precision,  # noqa: E402
                          setup_threads)


class PerSampleCIFAR(torch.utils.data.Dataset):
    """The reference scripts' pipeline: one image at a time, augmented in Python."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # N×H×W×C uint8, as PIL/numpy datasets hold it
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)  # ToTensor
        img = nn.functional.pad(img, (4, 4, 4, 4))  # RandomCrop(32, padding=4)
        dy, dx = random.randint(0, 8), random.randint(0, 8)
        img = img[:, dy:dy + 32, dx:dx + 32]
        if random.random() < 0.5:  # RandomHorizontalFlip
            img = img.flip(2)
        return img, self.labels[i]


def _step(model, opt, x, y, device, precision):
    with autocast(device, precision):
        loss = nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(batches, model, opt, device, precision, seconds: float, warmup: int = 2) -> float:
    seen, t0 = 0, None
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _step(model, opt, x, y, device, precision)
        if i + 1 == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        elif t0 is not None:
            seen += y.shape[0]
            if time.perf_counter() - t0 >= seconds:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def forever(make_iter):
    while True:
        yield from make_iter()


def fresh_model(name: str, device, channels_last: bool):
    """The model and optimiser every path starts from (same seed, same settings)."""
    torch.manual_seed(0)
    model = create_model(name, 10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model.train(), opt


def bench_model(name: str, data, device, seconds: float, batch_size: int, workers: int) -> dict:
    precision = resolve_precision("auto", device)
    # fast path; where it runs bf16, timed in fp32 too, to tell bf16's share from the data path's
    loader = DeviceLoader(data.images.to(device), data.labels.to(device), batch_size, shuffle=True, crop_pad=4,
                          flip=True, drop_last=True, channels_last=True)
    fast = timed(forever(lambda: iter(loader)), *fresh_model(name, device, True), device, precision, seconds)
    fast_fp32 = None
    if precision != "fp32":
        fast_fp32 = timed(forever(lambda: iter(loader)), *fresh_model(name, device, True), device, "fp32", seconds)
    # conventional path
    model, opt = fresh_model(name, device, False)
    dl = torch.utils.data.DataLoader(PerSampleCIFAR(data.images, data.labels), batch_size=batch_size, shuffle=True,
                                     drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                                     persistent_workers=workers > 0)
    conv = timed(forever(lambda: iter(dl)), model, opt, device, "fp32", seconds)
    row = {"model": name, "fast_img_s": round(fast, 1), "conventional_img_s": round(conv, 1),
           "speedup": round(fast / conv, 2), "fast_precision": precision, "batch_size": batch_size}
    extra = ""
    if fast_fp32 is not None:
        row["fast_fp32_img_s"] = round(fast_fp32, 1)
        row["speedup_fp32"] = round(fast_fp32 / conv, 2)
        extra = f"   fast in fp32 {fast_fp32:9.1f} img/s   ×{fast_fp32 / conv:.2f}"
    print(f"{name:10s} fast {fast:9.1f} img/s   conventional {conv:9.1f} img/s   ×{fast / conv:.2f}  "
          f"({precision}, channels_last){extra}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fastnet", "resnet18", "resnet34", "vgg16", "vgg19"])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per model and path")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader workers of the conventional path (default 0: on a 2-core machine workers "
                         "take cores from the model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default="cifar10-mini", help="data set to draw batches from (default: shipped subset)")
    ap.add_argument("--out", default=None, help="JSON output (default results/train_throughput_<device>.json)")
    args = ap.parse_args()
    threads = setup_threads()
    device = pick_device(args.device)
    data = load_dataset(args.data).train
    machine = {"device": str(device), "threads": threads, "cores": cpu_count(), "cpu": platform.processor() or
               platform.machine(), "cpu_fast_bf16": cpu_has_fast_bf16(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    try:
        with open("/proc/cpuinfo") as fh:
            machine["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(json.dumps(machine))
    rows = [bench_model(m, data, device, args.seconds, args.batch_size, args.workers) for m in args.models]
    out = Path(args.out) if args.out else ROOT / "results" / f"train_throughput_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "seconds": args.seconds, "results": rows,
                               "command": "python " + " ".join(sys.argv)}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
