"""How many SIBA passes, and which step size, does a good trigger need?

    python bench/trigger_convergence.py --surrogate RUN/surrogate/model.safetensors \\
        [--data cifar10-mini] [--passes 40] [--alphas 0.8 0.4 0.2] [--max-images N] \\
        [--victim-passes 5 10 20 40 [--victim-alphas 0.8 0.05] --rate 0.05 --victim-epochs 60]

Part 1 (cheap): for each step size α = a·ε, run the optimisation for ``--passes`` passes and
record, after every pass, the mean clamped loss and the targeted success on the surrogate
of the best trigger so far, measured on the test images not of the target class.

Part 2 (``--victim-passes``, costly): for each step size of ``--victim-alphas`` (default: the
reference 0.8, else the first of ``--alphas``), poison the training set with the trigger as it
stood after each listed number of passes, train a victim with the given recipe, and record its
attack success rate, so that "enough passes" and "which step" are judged by the victim, not only
by the surrogate.

Prints tables and writes ``results/trigger_convergence_<data>.json`` and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siba.attacks import AdditiveTrigger, optimize_trigger  # noqa: E402
from siba.attacks.sparse import parse_number  # noqa: E402
from siba.data import load_dataset  # noqa: E402
from siba.figures import line_chart  # noqa: E402
from siba.metrics import evaluate_attack  # noqa: E402
from siba.models import create_model, load_model  # noqa: E402
from siba.poisoning import poison_dataset  # noqa: E402
from siba.runtime import pick_device, setup_threads  # noqa: E402
from siba.training import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--surrogate", required=True, help="surrogate model.safetensors")
    ap.add_argument("--data", default="cifar10-mini")
    ap.add_argument("--passes", type=int, default=40)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.8, 0.4, 0.2],
                    help="step sizes as multiples of eps (0.8 is the reference)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-images", type=int, default=None, help="optimise on a seeded subset of the training set")
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--victim-passes", type=int, nargs="*", default=[],
                    help="train a victim on the trigger after each of these pass counts")
    ap.add_argument("--victim-alphas", type=float, nargs="+", default=None,
                    help="the step sizes (of --alphas) whose triggers victims are trained on "
                         "(default: 0.8 if among --alphas, else the first)")
    ap.add_argument("--rate", type=float, default=0.05, help="poisoning rate of the victims")
    ap.add_argument("--victim-model", default="fastnet")
    ap.add_argument("--victim-widths", type=int, nargs=4, default=[16, 32, 64, 128])
    ap.add_argument("--victim-epochs", type=int, default=60)
    ap.add_argument("--victim-lr", type=float, default=0.2)
    ap.add_argument("--victim-crop-pad", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    def among(a: float, values: list[float]) -> bool:
        return any(abs(a - b) < 1e-9 for b in values)

    if args.victim_alphas is None:
        args.victim_alphas = [0.8 if among(0.8, args.alphas) else args.alphas[0]]
    unknown = [a for a in args.victim_alphas if not among(a, args.alphas)]
    if unknown:
        ap.error(f"--victim-alphas {' '.join(f'{a:g}' for a in unknown)} not among --alphas")
    if any(p < 1 or p > args.passes for p in args.victim_passes):
        ap.error(f"--victim-passes must lie in 1..{args.passes} (--passes)")
    setup_threads()
    device = pick_device(args.device)
    eps = parse_number(args.eps, "eps")
    data = load_dataset(args.data)
    surrogate = load_model(args.surrogate, device, expect_classes=data.num_classes)
    train_set = data.train
    if args.max_images:
        g = torch.Generator().manual_seed(args.seed)
        train_set = train_set.subset(torch.randperm(len(train_set), generator=g)[:args.max_images].sort().values)
    sel = data.test.labels != args.target
    test_x = data.test.images[sel].to(device)

    @torch.no_grad()
    def surrogate_success(delta: torch.Tensor, mask: torch.Tensor) -> float:
        hits = 0
        for i in range(0, len(test_x), 1000):
            x = test_x[i:i + 1000].float() / 255
            hits += int((surrogate((x + mask * delta).clamp(0, 1)).argmax(1) == args.target).sum())
        return hits / len(test_x)

    curves: dict[str, list[dict]] = {}
    snapshots = {}
    for a in args.alphas:
        t0 = time.perf_counter()
        res = optimize_trigger(surrogate, train_set.images, train_set.labels, k=args.k, eps=eps, alpha=a * eps,
                               beta=10.0, passes=args.passes, remask_every=5, batch_size=args.batch_size,
                               num_classes=data.num_classes, target=args.target, device=device, seed=args.seed,
                               snapshot_at=tuple(range(1, args.passes + 1)))
        wall = time.perf_counter() - t0
        rows = []
        for h in res.history:
            d, m = res.snapshots[h["pass"]]
            rows.append({**h, "test_success_best": surrogate_success(d, m)})
        curves[f"{a:g}"] = rows
        if among(a, args.victim_alphas):
            snapshots[a] = res.snapshots
        print(f"alpha {a:g}·eps: {wall:.0f} s for {args.passes} passes over {len(train_set)} images")
        for r in rows:
            if r["pass"] in (1, 2, 5, 10, 20, 40, 80, 200) or r["pass"] == args.passes:
                print(f"  pass {r['pass']:4d}  loss {r['loss']:.4f}  train success {r['surrogate_success']:.4f}  "
                      f"test success of best {r['test_success_best']:.4f}")

    victims = []
    for a, p in [(a, p) for a in snapshots for p in args.victim_passes]:
        d, m = snapshots[a][p]
        trig = AdditiveTrigger(d.cpu(), m.cpu(), eps=eps, k=args.k, num_classes=data.num_classes, target=args.target)
        poisoned = poison_dataset(data.train, trig, args.rate, seed=args.seed)
        torch.manual_seed(args.seed)
        kw = {"widths": args.victim_widths} if args.victim_model == "fastnet" else {}
        model = create_model(args.victim_model, data.num_classes, **kw)
        cfg = TrainConfig(epochs=args.victim_epochs, batch_size=128, lr=args.victim_lr, schedule="onecycle",
                          crop_pad=args.victim_crop_pad, eval_every=0, seed=args.seed)
        t0 = time.perf_counter()
        train(model, poisoned.data, None, cfg, device=device, log=lambda s: None)
        ev = evaluate_attack(model, data.test, trig, device=device)
        victims.append({"alpha": a, "passes": p, "rate": args.rate, "ba": ev["ba"], "asr": ev["asr"],
                        "asr_quantized": ev["asr_quantized"], "wall_s": round(time.perf_counter() - t0, 1)})
        print(f"victim on the trigger of alpha {a:g}·eps after {p} passes: BA {ev['ba']:.4f}  ASR {ev['asr']:.4f}")

    name = Path(str(args.data)).name
    out = Path(args.out) if args.out else ROOT / "results" / f"trigger_convergence_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": str(args.data), "surrogate": args.surrogate, "k": args.k, "eps": eps,
                               "optimisation_images": len(train_set), "device": str(device), "curves": curves,
                               "victims": victims, "command": "python " + " ".join(sys.argv)}, indent=2) + "\n")
    line_chart(out.with_suffix(".png"),
               {f"α={a}·ε": [(r["pass"], 100 * r["test_success_best"]) for r in rows] for a, rows in curves.items()},
               title="SIBA trigger: targeted success on the surrogate (test images)", xlabel="passes",
               ylabel="success (%)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
