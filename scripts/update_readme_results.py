"""Replace the README's results section with runs' results, rendered by selfexplain's own
report code from each run's results.json (never hand-edited).

    python scripts/update_readme_results.py RUN_DIR [RUN_DIR ...] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from selfexplain.report import markdown_summary

START, END = "<!-- results:start -->", "<!-- results:end -->"


def render(run_dir: Path) -> str:
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    text = markdown_summary(results)
    names = "+".join(results["benchmarks"])
    return text.replace("# selfexplain results", f"### Quick run: {names}", 1).replace("\n## ", "\n#### ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args()
    generated = "\n\n".join(render(d).strip() for d in args.run_dirs)
    text = args.readme.read_text(encoding="utf-8")
    block = f"{START}\n{generated}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    args.readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
