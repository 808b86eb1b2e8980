#!/usr/bin/env bash
# GPU readiness on a CUDA machine: the unit tests that need no data or real model, then a small
# quick patching run and the patching peer benchmark, each with its wall time.
#   SELFEXPLAIN_KEEP_TORCH=1 bash scripts/gpu_check.sh     # keep the machine's CUDA torch
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch (a CPU torch wheel?): install torch for CUDA, then rerun")
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0),
      "bf16" if torch.cuda.is_bf16_supported() else "no bf16")
PY
export SELFEXPLAIN_KEEP_TORCH=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
timed() { local t0=$SECONDS; "$@"; echo "== $* : $((SECONDS - t0)) s"; }
timed python -m pytest -q -p no:cacheprovider -m "not integration and not slow" tests
out=$(mktemp -d)
timed selfexplain run --benchmarks patching --mode quick --n-train 200 --n-test 100 --output-dir "$out"
timed python bench/patching_speed.py --items 4
if python -c "import nnsight, transformer_lens" 2>/dev/null; then
  timed python bench/patching_peers.py --sweep-prompts 1 --grid-prompts 6
fi
rm -rf "$out"
