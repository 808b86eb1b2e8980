#!/usr/bin/env bash
# Run the peer benchmarks and write their printed ratios into README.md (between the
# <!-- peers:start --> / <!-- peers:end --> markers), each under the command that printed it.
#   bash scripts/update_readme_peers.sh            # runs the three benches (a few minutes on 2 cores)
#   PEERS_OUT=DIR bash scripts/update_readme_peers.sh   # reuse DIR/{throughput,patching,attribution}.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out=${PEERS_OUT:-$(mktemp -d)}
declare -A cmds=(
  [patching]="python bench/patching_peers.py --sweep-prompts 1 --grid-prompts 6"
  [attribution]="python bench/attribution_peers.py --items 2"
  [throughput]="python bench/throughput.py"
)
if [ -z "${PEERS_OUT:-}" ]; then
  for name in throughput patching attribution; do ${cmds[$name]} > "$out/$name.txt"; done
fi
python - "$out" "${cmds[patching]}" "${cmds[attribution]}" "${cmds[throughput]}" <<'PY'
import re, sys
from pathlib import Path
out, *commands = sys.argv[1:]
blocks = []
for name, cmd in zip(("patching", "attribution", "throughput"), commands):
    text = "\n".join(l for l in Path(out, f"{name}.txt").read_text().splitlines() if "it/s]" not in l).strip()
    blocks.append(f"```\n$ {cmd}\n{text}\n```")
readme = Path("README.md")
body = readme.read_text()
new = "<!-- peers:start -->\n" + "\n\n".join(blocks) + "\n<!-- peers:end -->"
body, n = re.subn(r"<!-- peers:start -->.*?<!-- peers:end -->", lambda m: new, body, flags=re.S)
assert n == 1, "README.md has no <!-- peers:start --> ... <!-- peers:end --> section"
readme.write_text(body)
PY
echo "README.md updated from $out"
