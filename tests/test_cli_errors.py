"""Bad input through the CLI fails fast and clearly (issue 24): usage errors print the usage
message and exit 2; option, output-directory and store faults print one `error: ...` line and
exit 2; never a traceback, and nothing is created. No test here loads a model: every case must
fail in the validation layer (`RunConfig.resolved`, `check_output_dir`, the store checks)."""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfexplain import cli
from selfexplain.config import RunConfig, check_output_dir
from selfexplain.errors import ConfigError


def invoke(*args: str) -> tuple[int, str, str]:
    """`selfexplain ARGS` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue(), err.getvalue()


def assert_usage_error(code: int, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    text = err.strip()
    # click's message: usage, hint, 'Error: ...'; the parser's own errors (an option missing its
    # value) come without a context, so click prints the 'Error: ...' line alone
    assert (text.startswith("Usage:") and "\nError: " in text) or (text.startswith("Error: ") and "\n" not in text), err


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    line = err.strip()
    assert "\n" not in line and line.startswith("error: "), err
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----- 1. usage errors --------------------------------------------------------------------------
USAGE = {
    "unknown option": ["run", "--no-such-option"],
    "unknown option with value": ["run", "--bogus=3"],
    "extra argument": ["run", "stray"],
    "compare without runs": ["compare"],
    "compare with one run": ["compare", "a"],
    "explain without --run": ["explain"],
    "report without run": ["report"],
    "non-integer --n-test": ["run", "--n-test", "abc"],
    "float --n-test": ["run", "--n-test", "1.5"],
    "non-integer --seed": ["run", "--seed", "x"],
    "non-number --epochs": ["run", "--epochs", "many"],
    "option without value": ["run", "--seed"],
    "run id starting with -": ["report", "-abc"],
    "compare run id starting with -": ["compare", "-x", "b"],
    "unknown command": ["frobnicate"],
}


@pytest.mark.parametrize("args", USAGE.values(), ids=USAGE.keys())
def test_usage_errors_print_usage_and_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(*invoke(*args))
    assert listing(tmp_path) == set()


def test_no_arguments_prints_help_and_exits_2():
    code, out, err = invoke()
    assert code == 2 and "Traceback" not in out + err
    assert "Usage:" in out + err and "run" in out + err


def test_usage_error_through_the_real_entry_point(tmp_path):
    """The installed entry point, not only main(): typer's own click classes are caught."""
    proc = subprocess.run([sys.executable, "-m", "selfexplain.cli", "run", "--n-test", "abc",
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert_usage_error(proc.returncode, proc.stdout, proc.stderr)
    assert "'--n-test'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_typer_exit_code_is_the_process_exit_code(monkeypatch):
    """standalone_mode=False makes typer *return* typer.Exit's code: main must exit with it."""
    import typer

    app = typer.Typer()

    @app.command()
    def fails() -> None:
        raise typer.Exit(3)

    @app.command()
    def other() -> None:  # two commands: `fails` stays a subcommand
        pass

    monkeypatch.setattr(cli, "app", app)
    assert invoke("fails")[0] == 3
    assert invoke("other")[0] == 0


# ----- 2. option values: one line, exit 2, nothing created --------------------------------------
CONFIG = {
    "seed -1": (["--seed", "-1"], "--seed must be an integer in [0, 4294967295], not -1"),
    "seed too large": (["--seed", "99999999999"], "not 99999999999"),
    "empty benchmarks": (["--benchmarks", ""], "--benchmarks must name at least one benchmark"),
    "only commas": (["--benchmarks", ",, ,"], "--benchmarks must name at least one benchmark"),
    "duplicate benchmarks": (["--benchmarks", "patching,patching"], "'patching' is listed twice"),
    "empty explainers": (["--explainers", ","], "--explainers must name at least one explainer"),
    "duplicate explainers": (["--explainers", "self, self"], "'self' is listed twice"),
    "epochs nan": (["--epochs", "nan"], "--epochs must be a number in (0, 1000]"),
    "epochs inf": (["--epochs", "inf"], "not inf"),
    "epochs negative": (["--epochs", "-1"], "not -1.0"),
    "lora-r 0": (["--lora-r", "0"], "--lora-r must be an integer in [1, 4096], not 0"),
    "lora-r negative": (["--lora-r", "-4"], "not -4"),
    "n-attribution -1": (["--n-attribution", "-1"], "--n-attribution must be in [0, 10,000,000]"),
    "n-train huge": (["--n-train", "100000000"], "--n-train must be in [0, 10,000,000] (0: the benchmark's "
                                                 "default), not 100,000,000"),
    "n-test huge": (["--n-test", "20000000"], "not 20,000,000"),
    "n-test negative": (["--n-test", "-3"], "--n-test"),
    "n-train too small": (["--n-train", "3"], "--n-train must be >= 8"),
    "learning-rate nan": (["--learning-rate", "nan"], "--learning-rate must be a number in (0, 1), not nan"),
    "learning-rate 1": (["--learning-rate", "1"], "not 1.0"),
    "batch-size negative": (["--batch-size", "-2"], "--batch-size"),
    "budget-tokens small": (["--budget-tokens", "5"], "--budget-tokens must be >= 32"),
    "mode": (["--mode", "fast"], "--mode must be one of quick, standard, full, not 'fast'"),
    "answers": (["--answers", "sampled"], "--answers must be one of ranked, generated"),
    "empty subject": (["--subject", " "], "--subject must not be empty"),
}


@pytest.mark.parametrize("args,message", CONFIG.values(), ids=CONFIG.keys())
def test_bad_option_values_are_one_line_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert_one_line_error(*invoke("run", *args, "--output-dir", str(out)), message)
    assert listing(tmp_path) == set()


def test_seed_minus_one_through_the_real_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selfexplain.cli", "run", "--seed", "-1", "--output-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --seed must be an integer in [0, 4294967295], not -1"
    assert listing(tmp_path) == set()


def test_valid_config_resolves():
    cfg = RunConfig(seed=2**32 - 1, n_train=10_000_000, n_attribution=0, lora_r=1).resolved()
    assert cfg.epochs == 1.0 and cfg.batch_size == 4


# ----- 3. output directory ---------------------------------------------------------------------
def test_output_dir_that_is_a_file(tmp_path):
    target = tmp_path / "results"
    target.write_text("mine")
    assert_one_line_error(*invoke("run", "--output-dir", str(target)),
                          f"output directory {target} is an existing file, not a directory")
    assert_one_line_error(*invoke("run", "--output-dir", str(target / "sub")), "is inside")
    assert listing(tmp_path) == {"results"} and target.read_text() == "mine"


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "to-create"])
def test_read_only_output_dir(tmp_path, monkeypatch, exists):
    """A read-only filesystem (EROFS), simulated: root ignores file modes."""
    target = tmp_path / "out"
    if exists:
        target.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    line = assert_one_line_error(*invoke("run", "--output-dir", str(target)), "the filesystem is read-only",
                                 "pass another --output-dir")
    assert str(target) in line
    assert listing(tmp_path) == ({"out"} if exists else set())


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line_error(*invoke("run", "--output-dir", str(locked)), f"cannot write in {locked}")
        assert_one_line_error(*invoke("run", "--output-dir", str(locked / "new")), "cannot create")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_check_output_dir_leaves_nothing(tmp_path):
    check_output_dir(tmp_path)
    check_output_dir(tmp_path / "a" / "b")
    assert listing(tmp_path) == set()
    with pytest.raises(ConfigError, match="must not be empty"):
        check_output_dir("")


# ----- 4. report -------------------------------------------------------------------------------
def test_report_out_is_a_directory(tmp_path):
    (tmp_path / "dir").mkdir()
    assert_one_line_error(*invoke("report", "some-run", "--output-dir", str(tmp_path), "--out",
                                  str(tmp_path / "dir")), "is a directory", "report.html")
    assert_one_line_error(*invoke("report", "some-run", "--output-dir", str(tmp_path), "--out",
                                  str(tmp_path / "new") + "/"), "is a directory")
    assert listing(tmp_path) == {"dir"}


def _store_with_runs(output_dir: Path, ids=("run-a",)) -> Path:
    from selfexplain.runs.store import Store

    store = Store.for_output_dir(output_dir)
    for run_id in ids:
        store.start_run(run_id, output_dir / run_id, {"subject": "s", "benchmarks": "patching", "mode": "quick",
                                                      "seed": 0}, {})
    store.close()
    return output_dir / "selfexplain.db"


@pytest.mark.parametrize("ref", ["", " "])
def test_report_empty_run_id_never_picks_the_only_run(tmp_path, ref):
    _store_with_runs(tmp_path)
    assert_one_line_error(*invoke("report", ref, "--output-dir", str(tmp_path)), "no run id given")


def test_store_resolve_refuses_an_empty_reference(tmp_path):
    from selfexplain.runs.store import Store

    store = Store(_store_with_runs(tmp_path))
    for ref in ("", ".", "  "):
        with pytest.raises(ConfigError, match="no run id given"):
            store.resolve(ref)
    assert store.resolve("run") == "run-a"


# ----- 5. a damaged results store --------------------------------------------------------------
@pytest.fixture
def corrupt_store(tmp_path) -> Path:
    """A store whose header and schema are intact but whose `runs` table page is garbage: opening
    works, reading the runs raises sqlite3.DatabaseError 'database disk image is malformed'."""
    out = tmp_path / "out"
    path = _store_with_runs(out, ids=("run-a", "run-b"))
    db = sqlite3.connect(path)
    root, = db.execute("SELECT rootpage FROM sqlite_master WHERE name='runs'").fetchone()
    page_size, = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xa5" * page_size)
    return path


@pytest.mark.parametrize("args", [["runs"], ["report", "run-a"], ["compare", "run-a", "run-b"], ["run"]],
                         ids=["runs", "report", "compare", "run"])
def test_corrupt_store_is_a_one_line_error_naming_the_file(corrupt_store, args):
    out = corrupt_store.parent
    before = listing(out)
    line = assert_one_line_error(*invoke(*args, "--output-dir", str(out)), str(corrupt_store))
    assert "malformed" in line and "move it aside" in line
    assert listing(out) == before  # `run`: no run directory created, nothing loaded


# ----- 6. property-based: generated argument lists for `run` -----------------------------------
INT_RANGES = {"--seed": (0, 2**32 - 1), "--n-train": (8, 10_000_000), "--n-test": (4, 10_000_000),
              "--lora-r": (1, 4096), "--n-attribution": (0, 10_000_000), "--batch-size": (0, 65536),
              "--budget-tokens": (32, 1_000_000)}
FLOAT_RANGES = {"--epochs": (0.0, 1000.0), "--learning-rate": (0.0, 1.0)}
KNOWN_FLAGS = {f"--{name.replace('_', '-')}" for name in RunConfig.__dataclass_fields__} | {
    "--no-trust-remote-code", "--help"}

VALID = st.sampled_from([["--mode", "quick"], ["--mode", "full"], ["--seed", "7"], ["--n-test", "40"],
                         ["--n-train", "0"], ["--epochs", "0.5"], ["--learning-rate", "0.001"], ["--lora-r", "4"],
                         ["--benchmarks", "patching"], ["--explainers", "self,never-changes"],
                         ["--answers", "generated"], ["--trust-remote-code"], ["--no-trust-remote-code"],
                         ["--subject", "smollm2"], ["--n-attribution", "0"], ["--batch-size", "2"]])

# text with no digit that is not a spelling of inf/nan: never a number
NOT_A_NUMBER = st.text(alphabet=st.characters(blacklist_categories=("Nd", "No", "Cs"), blacklist_characters="\x00"),
                       max_size=12).filter(lambda s: s.strip().lstrip("+-").lower() not in ("inf", "nan", "infinity")
                                           and not s.startswith("-"))


def _out_of_range_int(flag: str) -> st.SearchStrategy[list[str]]:
    low, high = INT_RANGES[flag]
    values = st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1))
    if flag == "--n-train":
        values = st.one_of(values.filter(lambda v: v != 0), st.integers(1, 7))
    if flag == "--n-test":
        values = st.one_of(values.filter(lambda v: v != 0), st.integers(1, 3))
    if flag == "--budget-tokens":
        values = st.one_of(values.filter(lambda v: v != 0), st.integers(1, 31))
    return values.map(lambda v: [flag, str(v)])


def _bad_float(flag: str) -> st.SearchStrategy[list[str]]:
    low, high = FLOAT_RANGES[flag]
    special = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "-nan"])
    if flag == "--epochs":  # 0 means the mode's default
        numbers = st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                            st.floats(min_value=high * 1.0001, allow_nan=False, allow_infinity=False))
    else:
        numbers = st.one_of(st.floats(max_value=low, allow_nan=False, allow_infinity=False),
                            st.floats(min_value=high, allow_nan=False, allow_infinity=False))
    return st.one_of(special, numbers.map(repr)).map(lambda v: [flag, v])


UNKNOWN_OPTION = st.from_regex(r"\A--[a-z][a-z0-9-]{0,15}(=[a-z0-9]{0,4})?\Z").filter(
    lambda s: s.split("=")[0] not in KNOWN_FLAGS).map(lambda s: [s])
NAMES = st.sampled_from(["patching", "ablation", "rationales", "self", "lime"])

POISON = st.one_of(
    UNKNOWN_OPTION,
    st.text(alphabet="abcxyz_./", min_size=1, max_size=8).map(lambda s: [s]),  # stray positional argument
    st.sampled_from(sorted(INT_RANGES)).flatmap(_out_of_range_int),
    st.sampled_from(sorted(FLOAT_RANGES)).flatmap(_bad_float),
    st.tuples(st.sampled_from(sorted(INT_RANGES) + sorted(FLOAT_RANGES)), NOT_A_NUMBER).map(list),
    st.sampled_from(sorted(INT_RANGES) + sorted(FLOAT_RANGES)).map(lambda f: [f]),  # value missing at the end
    st.tuples(st.sampled_from(["--mode", "--answers"]), st.text(max_size=8)).filter(
        lambda t: t[1] not in ("quick", "standard", "full", "ranked", "generated") and not t[1].startswith("-")).map(list),
    st.sampled_from(["", ",", " , ,", ",,,"]).flatmap(
        lambda s: st.sampled_from([["--benchmarks", s], ["--explainers", s]])),
    NAMES.map(lambda n: ["--benchmarks", f"{n},{n}"]),
    NAMES.map(lambda n: ["--explainers", f"{n}, {n}"]),
    st.just(["--output-dir", "FILE"]),
    st.just(["--subject", ""]),
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("garbage")
    (root / "FILE").write_text("not a directory")
    return root


# database=None: a failure prints its example; no example store is kept between runs
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid=st.lists(VALID, max_size=6), poison=POISON)
def test_generated_bad_run_arguments_fail_in_validation(sandbox, valid, poison):
    poison = [str(sandbox / "FILE") if a == "FILE" else a for a in poison]
    args = ["run", "--output-dir", str(sandbox / "out"), *[a for opt in valid for a in opt], *poison]
    started = time.perf_counter()
    code, out, err = invoke(*args)
    assert code == 2, (args, code, out, err)
    assert "Traceback" not in out + err, args
    text = err.strip()
    if text.startswith(("Usage:", "Error:")):
        assert_usage_error(code, out, err)
    else:
        assert "\n" not in text and text.startswith("error: "), (args, err)
    assert listing(sandbox) == {"FILE"}, args  # no output dir, no run directory, no store
    assert time.perf_counter() - started < 5, args  # validation only: no model load


CONFIG_VALUES = st.fixed_dictionaries({}, optional={
    "seed": st.integers(-2**40, 2**40), "n_train": st.integers(-10, 2 * 10**7), "n_test": st.integers(-10, 2 * 10**7),
    "epochs": st.floats(), "learning_rate": st.floats(), "lora_r": st.integers(-5, 10**5),
    "batch_size": st.integers(-5, 10**6), "n_attribution": st.integers(-5, 2 * 10**7),
    "budget_tokens": st.integers(-5, 2 * 10**6), "benchmarks": st.text(alphabet="patching,ablon ", max_size=20),
    "explainers": st.text(alphabet="self,ai ", max_size=12), "mode": st.sampled_from(["quick", "full", "", "x"]),
    "answers": st.sampled_from(["ranked", "generated", "", "sampled"]), "subject": st.sampled_from(["smollm2", "", " "]),
})


@settings(max_examples=200, deadline=None, database=None)
@given(values=CONFIG_VALUES)
def test_generated_config_values_resolve_or_raise_one_config_error(values):
    try:
        cfg = RunConfig(**values).resolved()
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert 0 <= cfg.seed <= 2**32 - 1 and cfg.lora_r >= 1 and cfg.n_attribution >= 0
    assert math.isfinite(cfg.epochs) and 0 < cfg.epochs <= 1000 and 0 < cfg.learning_rate < 1
    assert 0 <= cfg.n_train <= 10_000_000 and 0 <= cfg.n_test <= 10_000_000
    names = cfg.benchmark_list()
    assert names and len(set(names)) == len(names)
