#!/usr/bin/env bash
# Install, then run the test suite (unit tests on tiny models + integration tests on SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m pytest -q -p no:cacheprovider tests
