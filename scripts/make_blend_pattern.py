"""Make siba's default Blended pattern from scikit-image's ``chelsea.png`` (CC0, Stefan van der Walt).

    python scripts/make_blend_pattern.py      # writes src/siba/attacks/assets/chelsea-128.png

The photograph is centre-cropped to a square and resized to 128×128 (Lanczos); the Blended attack
resizes it again to the data's image size. scikit-image is needed only here (a test dependency).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "siba" / "attacks" / "assets" / "chelsea-128.png"


def main() -> None:
    import skimage.data

    img = np.asarray(skimage.data.chelsea())  # 300×451×3
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(img[top:top + side, left:left + side])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    square.resize((128, 128), Image.LANCZOS).save(OUT, format="PNG", optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
