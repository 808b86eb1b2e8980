"""html_report: the self-contained HTML page of a run, checked as text and in headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest

from selfexplain.report.html_page import FAMILY_INFO, family, render_html, script_json, write_html_report

PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
EVIL_NAME = 'evil<img src=x onerror="window.__pwned=3">'


# --------------------------------------------------------------------------- data


def examples_from_run(run_dir: Path) -> dict[str, list[dict]]:
    """Examples in html_report's format from a run directory (test records + predictions/*.jsonl).

    Development helper: the run store supplies these in the package.
    """
    def norm(text: str) -> str:
        return re.sub(r"[^\w]+", " ", text.lower()).strip()

    out: dict[str, list[dict]] = {}
    for bench_dir in sorted(p for p in Path(run_dir).iterdir() if (p / "records" / "records.jsonl").is_file()):
        lines = (bench_dir / "records" / "records.jsonl").read_text(encoding="utf-8").splitlines()
        test = {r["id"]: r for r in map(json.loads, filter(str.strip, lines)) if r.get("split") == "test"}
        preds: dict[str, dict] = {}
        for f in sorted((bench_dir / "predictions").glob("*.jsonl")):
            for line in filter(str.strip, f.read_text(encoding="utf-8").splitlines()):
                p = json.loads(line)
                if p["id"] in test:
                    truth = p.get("truth", test[p["id"]]["answer"])
                    preds.setdefault(p["id"], {})[f.stem] = {"text": p["text"],
                                                             "exact_match": float(norm(p["text"]) == norm(truth))}
        out[bench_dir.name] = [{"id": r["id"], "query": r["query"], "truth": r["answer"], "context": r["context"],
                                "predictions": preds.get(r["id"], {})} for r in test.values()]
    return out


def _est(v: float, w: float = 0.05, n: int = 30) -> dict:
    return {"value": v, "low": max(0.0, v - w), "high": min(1.0, v + w), "n": n}


def _stats(v: float, n: int = 30, subsample: bool = False, seconds: float = 0.1, passes: float = 4) -> dict:
    return {"exact_match": _est(v, n=n), "changed_macro_f1": _est(min(1.0, v + 0.05), n=n),
            "content_match": _est(v, n=n), "parse_rate": 1.0, "n_items": n, "subsample": subsample,
            "cost": {"forward_passes": passes, "seconds": seconds}}


def _pair(rival: str, v: float) -> dict:
    return {"metric": "exact_match", "best_other": rival, "difference": {"value": v, "low": v - 0.04, "high": v + 0.04,
                                                                          "n": 30}, "n": 30}


ABLATION_EXPLAINERS = {"self": 0.7, "other": 0.6, "zero-shot": 0.1, "4-shot": 0.3, "occlusion": 0.65,
                       "lime": 0.55, "never-changes": 0.5, "hint-follow": 0.75}
FAMILY_OF = {"self": "self", "other": "other", "zero-shot": "untrained", "4-shot": "untrained", "occlusion": "post-hoc",
             "lime": "post-hoc", "never-changes": "heuristic", "hint-follow": "heuristic",
             "integrated-gradients": "post-hoc", "human": "human"}


def synthetic_results() -> dict:
    explainers = {n: _stats(v, n=10 if n in ("occlusion", "lime") else 30, subsample=n in ("occlusion", "lime"),
                            seconds=1e-6 if n in ("never-changes", "hint-follow") else 0.2 if n != "occlusion" else 3.0)
                  for n, v in ABLATION_EXPLAINERS.items()}
    explainers["occlusion"]["info"] = {"method": "occlusion", "threshold": 0.21, "n_fit": 20}
    for name, stats in explainers.items():
        stats.update(family=FAMILY_OF[name], description=f"what {name} is", reference=False)
    from selfexplain.benchmarks import get_benchmark

    declared = get_benchmark("ablation")  # the real declaration: metrics, facts and charts
    ablation = {
        "ground_truth": {"n_questions": 50, "subject_accuracy_unpatched": 0.78, "n_raw_records": 300,
                         "raw_changed_rate": 0.15, "train_changed_rate": 0.5, "test_changed_rate": 0.5,
                         "changed_rate_by_wording": {"Hint: the answer is {hint}.": 0.17,
                                                     "<answer>{hint}</answer>": 0.14}, "seconds": 12.5},
        "n_train": 100, "n_test": 30, "primary_metric": "exact_match", "explainers": explainers, "multitask": False,
        "self_vs_best_other": _pair("hint-follow", -0.05), "self_vs_other": _pair("other", 0.1),
        "self_vs": {n: _pair(n, 0.7 - v) for n, v in ABLATION_EXPLAINERS.items() if n != "self"},
        "metrics": [m.to_dict() for m in declared.metrics], "scoring_text": declared.scoring_text,
        "ground_truth_text": declared.ground_truth_text,
    }
    ablation["ground_truth"]["subject_accuracy_unhinted"] = ablation["ground_truth"].pop("subject_accuracy_unpatched")
    ablation["facts"] = [f.to_dict() for f in declared.report_facts(ablation["ground_truth"])]
    ablation["charts"] = [c.to_dict() for c in declared.report_charts(ablation["ground_truth"])]
    ablation["notes"] = declared.report_notes(ablation)
    # a future benchmark: other metric names, older/missing keys, an unregistered explainer name
    eraser_stats = {
        "self": {"comprehensiveness": _est(0.4), "sufficiency": _est(0.3), "parse_rate": 0.9,
                 "cost": {"forward_passes": 3, "seconds": 0.05}},
        "integrated-gradients": {"comprehensiveness": _est(0.5), "sufficiency": _est(0.35), "parse_rate": 1.0},
        EVIL_NAME: {"comprehensiveness": _est(0.2), "sufficiency": _est(0.1), "parse_rate": 1.0,
                    "cost": {"forward_passes": 1, "seconds": 0.0}},
    }
    eraser_stats["self"]["family"] = "self"
    eraser_stats["integrated-gradients"]["family"] = "post-hoc"  # EVIL_NAME declares none: 'reference'
    eraser = {"ground_truth": {}, "n_train": 10, "n_test": 30, "primary_metric": "comprehensiveness",
              "explainers": eraser_stats,
              "metrics": [{"name": "comprehensiveness", "label": "comprehensiveness", "higher_is_better": True,
                           "primary": True, "percent": True},
                          {"name": "sufficiency", "label": "sufficiency (lower is better)", "higher_is_better": False,
                           "primary": False, "percent": True}]}
    return {"schema_version": 2, "run_dir": "/runs/ablation-smollm2-seed0-<b>x</b>",
            "config": {"subject": "smollm2", "other": "gemma3-270m", "seed": 0, "mode": "quick",
                       "benchmarks": "ablation,eraser"},
            "versions": {"selfexplain": "0.1.0", "torch": "2.13.0+cpu"},
            "benchmarks": {"ablation": ablation, "eraser": eraser}}


def synthetic_examples() -> dict[str, list[dict]]:
    rows = []
    for i in range(30):
        changed = i % 2 == 0
        truth = f"changes to Option{i}" if changed else f"unchanged from Option{i}"
        preds = {}
        for j, name in enumerate(ABLATION_EXPLAINERS):
            if name in ("occlusion", "lime") and i >= 10:
                continue  # attribution baselines answer a subsample
            right = (i + j) % 3 != 0
            preds[name] = {"text": truth if right else f"changes to Wrong{i}", "exact_match": float(right)}
        rows.append({"id": f"ablation/q{i}", "query": f"Question {i}?\nRespond with one of A or B.\nHint: B.\nAnswer:",
                     "truth": truth, "predictions": preds,
                     "context": {"label": "changed" if changed else "unchanged", "changed": changed,
                                 "labels": ["A", "B"], "hint": "Hint: B.", "subject_correct": i % 4 != 0}})
    rows[7]["predictions"]["self"] = {"text": PAYLOAD, "exact_match": 0.0}
    rows[8]["query"] = "Q </script><script>alert(1)</script> & \u2028 line\u2029 end"
    rows[9]["context"]["hint"] = "<b>bold?</b>"
    eraser = [{"id": "eraser/0", "query": "Why?", "truth": "because", "context": {},
               "predictions": {"self": {"text": "because", "exact_match": 1.0},
                               EVIL_NAME: {"text": "no", "exact_match": None}}}]
    return {"ablation": rows, "eraser": eraser}


# --------------------------------------------------------------------------- unit checks


def test_render_escapes_data_and_lists_every_explainer():
    results, examples = synthetic_results(), synthetic_examples()
    page = render_html(results, examples)
    for bench in results["benchmarks"].values():
        for name in bench["explainers"]:
            assert name in page or name.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in page
    assert "<script>alert" not in page and "<script>window.__pwned" not in page
    assert "<img src=x" not in page and 'onerror="window' not in page
    assert "\\u003cscript\\u003ewindow.__pwned=1\\u003c/script\\u003e" in page  # JSON-escaped in the data block
    assert "\u2028" not in page and "\u2029" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page  # run dir is escaped in the header
    assert page.count("<script") == page.count("</script>")
    n_figs = page.count('class="plotly-graph-div"')
    assert f'data-figures="{n_figs}"' in page and n_figs >= 8
    assert 'src="http' not in page  # plotly.js inlined, no CDN
    assert "comprehensiveness" in page and "sufficiency" in page  # metric names come from the data
    assert "hint-follow wins" in page and "self wins" in page  # verdicts (best other; vs other)


def test_script_json_roundtrip_and_escaping():
    obj = {"a": "</script><b>&\u2028\u2029", "n": [1, 2.5, None, float("nan")], "t": True}
    text = script_json(obj)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == {"a": obj["a"], "n": [1, 2.5, None, None], "t": True}


def test_families_come_from_the_declaration():
    results = synthetic_results()
    ablation, eraser = results["benchmarks"]["ablation"], results["benchmarks"]["eraser"]
    assert family(ablation, "hint-follow") == "heuristic" and family(ablation, "occlusion") == "post-hoc"
    assert family(eraser, EVIL_NAME) == "reference"  # an explainer without a declared family
    assert set(FAMILY_INFO) == {"self", "other", "untrained", "human", "post-hoc", "heuristic", "reference"}


def test_lower_is_better_metric_ranks_and_verdicts_the_right_way():
    from selfexplain.report.html_page import ranked

    eraser = synthetic_results()["benchmarks"]["eraser"]
    eraser["primary_metric"] = "sufficiency"
    for m in eraser["metrics"]:
        m["primary"] = m["name"] == "sufficiency"
    assert ranked(eraser)[0] == EVIL_NAME  # sufficiency 0.1: the lowest is the best


def test_older_results_without_optional_keys(tmp_path):
    results = synthetic_results()
    bench = results["benchmarks"]["ablation"]
    for key in ("self_vs", "self_vs_other", "multitask"):
        bench.pop(key)
    for stats in bench["explainers"].values():
        for key in ("n_items", "subsample", "info", "cost"):
            stats.pop(key, None)
    bench["explainers"]["self"]["exact_match"]["value"] = float("nan")
    results.pop("versions")
    path = write_html_report(results, {}, tmp_path / "sub" / "report.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # atomic write left no temp file


# --------------------------------------------------------------------------- headless Chromium


def _launch(p):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium is not installed: as root, `apt-get install -y chromium` (scripts/test.sh does this)")
    return p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])


def test_report_in_headless_chromium(tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]' (its own browser is not needed)")
    from PIL import Image

    results, examples = synthetic_results(), synthetic_examples()
    path = write_html_report(results, examples, tmp_path / "report.html")
    n_figs = path.read_text(encoding="utf-8").count('class="plotly-graph-div"')
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console, errors, remote = [], [], []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function("[...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d.querySelector('.main-svg'))", timeout=20000)
            rendered = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')]"
                                     ".filter(d => d.querySelector('.main-svg .trace')).length")
            assert rendered == n_figs
            # plotly shows the hostile explainer name as text, not markup
            assert page.evaluate("[...document.querySelectorAll('svg text')].some(t => t.textContent.includes("
                                 "'evil<img src=x'))")

            # example browser: paging, filters, search
            count = page.locator("#ex-count")
            assert "1–25 of 31" in count.inner_text()
            page.click("#ex-next")
            assert "26–31 of 31" in count.inner_text()
            page.select_option("#ex-bench", "ablation")
            page.select_option("#ex-kind", "changed")
            assert "of 15 examples" in count.inner_text()
            page.select_option("#ex-expl", "occlusion")
            page.select_option("#ex-correct", "0")
            expected = sum(1 for r in examples["ablation"] if r["context"]["label"] == "changed"
                           and "occlusion" in r["predictions"] and not r["predictions"]["occlusion"]["exact_match"])
            assert f"of {expected} examples" in count.inner_text()
            page.select_option("#ex-expl", "")
            page.select_option("#ex-kind", "")
            page.select_option("#ex-bench", "")
            page.fill("#ex-search", "__pwned=1")
            page.wait_for_function("document.getElementById('ex-count').textContent.includes('of 1 examples')")
            card = page.locator("#ex-list .ex")
            assert card.count() == 1
            assert "<script>window.__pwned=1</script>" in card.inner_text()
            assert page.locator("#ex-list img, #ex-list script, table.board img").count() == 0
            page.fill("#ex-search", "alert(1)")
            page.wait_for_function("document.querySelector('#ex-list pre.query').textContent.includes('alert(1)')")
            assert card.count() == 1
            assert "</script><script>alert(1)</script>" in page.locator("#ex-list pre.query").inner_text()
            page.fill("#ex-search", "")
            page.wait_for_function("document.getElementById('ex-count').textContent.includes('of 31 examples')")
            assert page.evaluate("typeof window.__pwned") == "undefined"

            page.evaluate("window.scrollTo(0, 0)")
            shot = page.screenshot()
            chart = page.locator("#fig-0").screenshot()  # self vs other vs human-centric bars, first benchmark
        finally:
            browser.close()
    assert not errors, errors
    assert not console, console
    assert not remote, remote
    img = Image.open(io.BytesIO(shot)).convert("RGB")
    assert img.size == (1280, 900)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # header, text and cards: not a blank page
    bars = {c for _, c in Image.open(io.BytesIO(chart)).convert("RGB").getcolors(maxcolors=1 << 20)}
    for fam in ("self", "other", "post-hoc", "heuristic"):  # a bar in each family's colour was drawn
        assert tuple(int(FAMILY_INFO[fam][1][i:i + 2], 16) for i in (1, 3, 5)) in bars, fam
