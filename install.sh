#!/usr/bin/env bash
# Install deva: first the pinned torch build, then the project constrained to that build,
# so that pip never replaces it (a bare `torch` requirement would pull CUDA wheels).
#   bash install.sh            # runtime only
#   bash install.sh dev        # + pytest, ruff
#   bash install.sh dev,models # + transformers (image models)
# GPU users pick another build: DEVA_TORCH="torch==2.5.1" bash install.sh (optionally with
# PIP_EXTRA_INDEX_URL pointing at the matching PyTorch wheel index).
set -euo pipefail
cd "$(dirname "$0")"
export NO_ALBUMENTATIONS_UPDATE=1
torch_spec="${DEVA_TORCH:-torch==2.13.0+cpu}"
extras="${1:-}"
python -m pip install --quiet "$torch_spec"
constraints="constraints.txt"
if [ -n "${DEVA_TORCH:-}" ]; then
  constraints="$(mktemp)"
  python -c "import torch; print('torch==' + torch.__version__)" > "$constraints"
fi
target="."
[ -n "$extras" ] && target=".[${extras}]"
python -m pip install --quiet -c "$constraints" -e "$target"
python -c "import torch, deva; print(f'deva {deva.__version__} installed with torch {torch.__version__}')"
