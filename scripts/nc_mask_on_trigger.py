"""Where Neural Cleanse's reversed trigger for a class lies: on an attack's trigger pixels or elsewhere.

    python scripts/nc_mask_on_trigger.py REVERSED.safetensors TRIGGER.safetensors

REVERSED is a ``reversed/class-<c>.safetensors`` file that ``siba defend neural-cleanse`` saved, TRIGGER
the attack's ``trigger.safetensors``. Prints the share of the reversed mask's mass on the trigger's
pixels or their mirror image (victims trained with horizontal flips met the trigger in both places)
and that region's share of the image (what a mask spread evenly would get), as
``siba.defenses.neural_cleanse.mask_on_trigger`` computes them for results written since it exists.
A missing file or a trigger without pixels (a warp) is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reversed", help="a reversed/class-<c>.safetensors file of siba defend neural-cleanse")
    p.add_argument("trigger", help="the attack's trigger.safetensors")
    args = p.parse_args(argv)

    from siba.attacks import load_trigger
    from siba.defenses.neural_cleanse import saved_mask_on_trigger
    from siba.errors import SibaError

    try:
        alpha = getattr(load_trigger(args.reversed), "alpha", None)
        if alpha is None:
            raise SibaError(f"{args.reversed}: not a reversed Neural Cleanse trigger (no mask)")
        found = saved_mask_on_trigger(args.reversed, args.trigger)
        if found is None:
            raise SibaError(f"{args.trigger}: the trigger has no pixels (a warp): nothing to compare")
    except SibaError as exc:
        print(f"nc_mask_on_trigger: error: {exc}", file=sys.stderr)
        return 2
    share, region_share = found
    print(json.dumps({"reversed": args.reversed, "trigger": args.trigger, "mask_l1": float(alpha.amax(0).sum()),
                      "target_mask_on_trigger": round(share, 4), "trigger_region_share": round(region_share, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
