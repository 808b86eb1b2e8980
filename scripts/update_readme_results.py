"""Replace the README's results section with a run's generated results.md (never hand-edited).

    python scripts/update_readme_results.py runs/<run-dir> [README.md]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    run_dir = Path(sys.argv[1])
    readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
    generated = (run_dir / "results.md").read_text(encoding="utf-8")
    generated = generated.replace("# selfexplain results", "### Latest quick run", 1).replace("\n## ", "\n#### ")
    text = readme.read_text(encoding="utf-8")
    block = f"{START}\n{generated.strip()}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
