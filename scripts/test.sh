#!/usr/bin/env bash
# Install, then run the test suite (unit tests on tiny models + integration tests on SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh                                 # includes the test extra (pytest, playwright, pillow)
# The HTML report test runs headless Chromium: the Debian package, not playwright's download.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium not found and not root: tests/test_html_report.py will fail (apt-get install chromium)" >&2
  fi
fi
python -m pytest -q -p no:cacheprovider tests
