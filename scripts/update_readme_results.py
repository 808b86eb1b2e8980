"""Replace the README's results section with runs' results, rendered by selfexplain's own
report code from each run's results.json (never hand-edited).

    python scripts/update_readme_results.py RUN_DIR [RUN_DIR ...] [--readme README.md] [--update]

--update replaces only the runs whose section title (benchmarks and non-default options) is
already there, and appends new ones, keeping the other runs' sections as they are.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict
from pathlib import Path

from selfexplain.config import RunConfig
from selfexplain.report.tables import markdown_summary
from selfexplain.results import check_results

START, END = "<!-- results:start -->", "<!-- results:end -->"


def options(config: dict) -> str:
    """The run's options that differ from the defaults (besides where data and results live)."""
    defaults = asdict(RunConfig())
    mode_defaults = RunConfig.MODES[config.get("mode", "quick")]  # runs store resolved values
    skip = {"benchmarks", "output_dir", "data_root", *mode_defaults}
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in config.items()
             if k not in skip and k in defaults and v != defaults[k]]
    flags += [f"--{k.replace('_', '-')} {config[k]:g}" for k in ("epochs", "batch_size")
              if k in config and config[k] != mode_defaults[k]]
    return f" ({', '.join(flags)})" if flags else ""


def render(run_dir: Path) -> str:
    results = check_results(json.loads((run_dir / "results.json").read_text(encoding="utf-8")), str(run_dir))
    text = markdown_summary(results)
    names = "+".join(results["benchmarks"])
    title = f"### {results['config'].get('mode', 'quick').capitalize()} run: {names}{options(results['config'])}"
    return text.replace("# selfexplain results", title, 1).replace("\n## ", "\n#### ").replace("\n### ", "\n##### ")


def merge(current: str, new: list[str]) -> list[str]:
    """The current block's run sections with each new one in place of the section of the same
    title (new titles appended)."""
    old = [s.strip() for s in re.split(r"(?m)^(?=### \w+ run: )", current) if s.strip()]
    title = lambda section: section.splitlines()[0]  # noqa: E731
    replacing = {title(s): s for s in new}
    merged = [replacing.pop(title(s), s) for s in old]
    return merged + [s for s in new if title(s) in replacing]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--update", action="store_true", help="keep the sections of runs not given")
    args = parser.parse_args()
    text = args.readme.read_text(encoding="utf-8")
    sections = [render(d).strip() for d in args.run_dirs]
    if args.update and START in text:
        sections = merge(text.split(START, 1)[1].split(END, 1)[0], sections)
    generated = "\n\n".join(sections)
    block = f"{START}\n{generated}\n{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    args.readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
