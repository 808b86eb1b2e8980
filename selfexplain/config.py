"""Typed run configuration: saved next to every run, and the source of the CLI's options."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from selfexplain.errors import ConfigError

ANSWER_MODES = ("ranked", "generated")
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_ITEMS = 10_000_000  # sanity bound for record counts: a typo, not a dataset
MAX_EPOCHS = 1000
MAX_LORA_R = 4096
MAX_BATCH_SIZE = 65536
MAX_BUDGET_TOKENS = 1_000_000


@dataclass
class RunConfig:
    """Everything that determines a run's results (same config + seed -> same numbers)."""

    benchmarks: str = field(default="default", metadata={"help": "comma-separated benchmark names; 'default': the "
                                                       "benchmarks that declare themselves the default suite; "
                                                       "'all': every registered benchmark (one multitask adapter)"})
    subject: str = field(default="smollm2", metadata={"help": "subject model: registered name, .gguf, dir or HF id"})
    other: str = field(default="gemma3-270m", metadata={"help": "model of the 'other' explainer"})
    explainers: str = field(default="all", metadata={"help": "comma-separated explainer names, or 'all'"})
    data_root: str = field(default="", metadata={"help": "directory of the shared datasets (or $SELFEXPLAIN_DATA_ROOT)"})
    sources: str = field(default="facts", metadata={"help": "data sources, each 'name' or 'name:PATH': facts "
                                                     "(embedded), counterfact, lre (patching), mmlu (ablation), movies, boolq, "
                                                     "fever, multirc, cose (rationales; default movies,fever,cose)"})
    output_dir: str = field(default="runs", metadata={"help": "where run directories are written"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, splits, training and bootstrap"})
    mode: str = field(default="quick", metadata={"help": "quick (CPU, <= 10 min per benchmark, wide CIs), standard "
                                                 "(CPU, CIs that decide comparisons) or full (GPU)"})
    n_train: int = field(default=0, metadata={"help": "training records per benchmark (0: the benchmark's "
                                               "default for the mode)"})
    n_test: int = field(default=0, metadata={"help": "test records per benchmark (0: the benchmark's default "
                                              "for the mode)"})
    epochs: float = field(default=0.0, metadata={"help": "training epochs (0: the mode's default)"})
    learning_rate: float = field(default=2e-3, metadata={"help": "LoRA learning rate"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    batch_size: int = field(default=0, metadata={"help": "training batch size (0: the mode's default, quick and "
                                                  "standard 4, full 8)"})
    n_attribution: int = field(default=0, metadata={"help": "test items for the slow attribution baselines (a "
                                                     "balanced subsample; half as many training items fit their "
                                                     "threshold); 0: the mode's default (quick 8, standard 100, "
                                                     "full all)"})
    budget_tokens: int = field(default=0, metadata={"help": "rationales: document token budget per input (0: the "
                                                     "mode's default, quick 64, standard 128, full 512)"})
    answers: str = field(default="ranked", metadata={"help": "how generating explainers answer where the benchmark "
                                                     "has a closed answer set (patching, ablation): ranked (the "
                                                     "likeliest candidate) or generated (free greedy decoding)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow models with custom code"})
    seeds: str = field(default="", metadata={"help": "comma-separated seeds, e.g. 0,1,2: one run per seed (each "
                                         "seed draws the ground truth and trains), reported as the mean, the "
                                         "spread across seeds and CIs that resample seeds and items; overrides "
                                         "--seed"})
    train_sizes: str = field(default="", metadata={"help": "comma-separated training sizes, e.g. 250,500,1000: a "
                                               "learning curve; one ground truth with the largest size, every "
                                               "explainer trained on nested subsets of it, tested on one test set"})
    train_subset: int = field(default=0, metadata={"help": "train on a seeded subset of this many of the ground "
                                                "truth's training records (a learning-curve point; 0: all)"})
    lora_layers: float = field(default=0.0, metadata={"help": "fraction of the top decoder layers a LoRA explainer "
                                                   "adapts, in (0, 1]; 0: the default (half for explainers without "
                                                   "a trainable vector projector, e.g. self; all otherwise)"})
    shard: str = field(default="", metadata={"help": "I/N (1-based, 1 <= I <= N): compute shard I of N of the run "
                                         "in <output-dir>/shard-I-of-N/; every shard builds the same ground truth "
                                         "and adapters, then answers and scores its blocks of the test split (32 "
                                         "consecutive records each, block k to shard k mod N + 1); `selfexplain "
                                         "merge` combines the N shards into the unsharded run (docs/scale.md)"})

    # Sizes are per benchmark (Benchmark.sizes) unless given; these are the fallbacks.
    # Quick mode trains one epoch in batches of 4: on the 2-core CPU, optimizer steps count more
    # than examples seen. Patching `self` exact match (fp32 weights): batch 8 x 2 epochs 77.2
    # (498 s of training), batch 8 x 1 epoch 62.7 (231 s), batch 4 x 1 epoch 70.2 (224 s),
    # batch 2 x 1 epoch 77.0 (328 s); `other` 78.8 / 78.2 / 77.5 (870 / 356 / 393 s) for the
    # first three. Ablation `self`: batch 8 x 2 epochs and batch 4 x 1 epoch both 71.7. With bf16
    # weight storage, batch 2 left `other` unstable (46.5, final loss 0.89): README, Notes.
    # quick: every benchmark in <= 10 min on the 2-core CPU (README, Modes); standard: the sizes
    # earlier quick runs used (their CIs decide comparisons); full: GPU sizes.
    MODES = {"quick": {"n_train": 400, "n_test": 120, "epochs": 1.0, "batch_size": 4, "n_attribution": 8},
             "standard": {"n_train": 1500, "n_test": 400, "epochs": 1.0, "batch_size": 4, "n_attribution": 100},
             "full": {"n_train": 20000, "n_test": 2000, "epochs": 2.0, "batch_size": 8, "n_attribution": MAX_ITEMS}}

    def resolved(self) -> "RunConfig":
        """A copy with the mode's epochs and batch size filled in and every value checked (sizes:
        `for_benchmark`). Needs no model: the CLI calls it before anything loads."""
        if self.mode not in self.MODES:
            raise ConfigError(f"--mode must be one of {', '.join(self.MODES)}, not {self.mode!r}")
        self._check_values()
        values = asdict(self)
        values["benchmarks"] = ",".join(self.benchmark_list())  # 'default' -> the suite's names
        for key in ("epochs", "batch_size", "n_attribution"):
            values[key] = values[key] or self.MODES[self.mode][key]
        cfg = RunConfig(**values)
        if (cfg.n_train and cfg.n_train < 8) or (cfg.n_test and cfg.n_test < 4):
            raise ConfigError("--n-train must be >= 8 and --n-test >= 4 (or 0 for the benchmark's default)")
        if cfg.budget_tokens and cfg.budget_tokens < 32:
            raise ConfigError("--budget-tokens must be >= 32 (or 0 for the mode's default)")
        if cfg.answers not in ANSWER_MODES:
            raise ConfigError(f"--answers must be one of {', '.join(ANSWER_MODES)}, not {cfg.answers!r}")
        if cfg.train_subset and cfg.train_subset < 8:
            raise ConfigError(f"--train-subset must be >= 8 (or 0 for every training record), not {cfg.train_subset}")
        cfg.seed_list(), cfg.train_size_list()  # one-line errors for malformed lists
        if cfg.train_sizes and cfg.n_train:
            raise ConfigError(f"--n-train {cfg.n_train} and --train-sizes {cfg.train_sizes!r} both set: the curve's "
                              "ground truth has the largest of --train-sizes training records; drop --n-train")
        if cfg.epochs <= 0 or cfg.batch_size < 1:
            raise ConfigError("--epochs must be > 0 and --batch-size >= 1 (or 0 for the mode's default)")
        if cfg.shard_spec() and (cfg.seeds.strip() or cfg.train_sizes.strip()):
            raise ConfigError(f"--shard {cfg.shard} shards one run; --seeds and --train-sizes make several: run "
                              "each seed or training size as its own sharded run (--seed, --train-subset)")
        return cfg

    def shard_spec(self) -> tuple[int, int] | None:
        """--shard as (I, N), 1-based; None when not sharded; ConfigError on a malformed value."""
        return parse_shard(self.shard)

    def store_dir(self) -> Path:
        """Where this run's store, run directory and caches live: --output-dir, or its
        shard-I-of-N subdirectory for a shard (the run's identity is the same in both)."""
        spec = self.shard_spec()
        return Path(self.output_dir) / shard_dir_name(*spec) if spec else Path(self.output_dir)

    def _check_values(self) -> None:
        """Ranges, finiteness and lists: one ConfigError naming the option, the value and what is allowed."""
        for name in ("seed", "n_train", "n_test", "lora_r", "batch_size", "n_attribution", "budget_tokens",
                     "train_subset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{_flag(name)} must be an integer, not {value!r}")
        for name in ("epochs", "learning_rate", "lora_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{_flag(name)} must be a number, not {value!r}")
        if not (isinstance(self.lora_layers, (int, float)) and 0 <= self.lora_layers <= 1):
            raise ConfigError(f"--lora-layers must be a fraction in (0, 1] (or 0 for the default), not {self.lora_layers!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed must be an integer in [0, {MAX_SEED}], not {self.seed}")
        for name, upper, zero in (("n_train", MAX_ITEMS, "the benchmark's default"),
                                  ("n_test", MAX_ITEMS, "the benchmark's default"),
                                  ("train_subset", MAX_ITEMS, "every training record"),
                                  ("n_attribution", MAX_ITEMS, "the mode's default"),
                                  ("batch_size", MAX_BATCH_SIZE, "the mode's default"),
                                  ("budget_tokens", MAX_BUDGET_TOKENS, "the mode's default")):
            value = getattr(self, name)
            if not 0 <= value <= upper:
                raise ConfigError(f"{_flag(name)} must be in [0, {upper:,}] (0: {zero}), not {value:,}")
        if not 1 <= self.lora_r <= MAX_LORA_R:
            raise ConfigError(f"--lora-r must be an integer in [1, {MAX_LORA_R}], not {self.lora_r}")
        if not math.isfinite(self.epochs) or not 0 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"--epochs must be a number in (0, {MAX_EPOCHS}] (or 0 for the mode's default), "
                              f"not {self.epochs}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate < 1):
            raise ConfigError(f"--learning-rate must be a number in (0, 1), not {self.learning_rate}")
        for name in ("subject", "other", "output_dir"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"{_flag(name)} must not be empty")
        names = self.benchmark_list()
        if not names:
            raise ConfigError(f"--benchmarks must name at least one benchmark (comma-separated), "
                              f"not {self.benchmarks!r}; `selfexplain list` shows them")
        _no_duplicates("--benchmarks", self.benchmarks, names)
        explainers = [e.strip() for e in self.explainers.split(",") if e.strip()]
        if not explainers:
            raise ConfigError(f"--explainers must name at least one explainer (comma-separated) or be 'all', "
                              f"not {self.explainers!r}; `selfexplain list` shows them")
        _no_duplicates("--explainers", self.explainers, explainers)

    def seed_list(self) -> list[int]:
        """--seeds as integers (empty: one run with --seed); ConfigError on a malformed list."""
        return _int_list("--seeds", self.seeds, 0, MAX_SEED)

    def train_size_list(self) -> list[int]:
        """--train-sizes as increasing integers (empty: no curve); ConfigError on a malformed list."""
        return sorted(_int_list("--train-sizes", self.train_sizes, 8, MAX_ITEMS))

    def for_benchmark(self, sizes: dict[str, dict[str, int]] | None = None) -> "RunConfig":
        """A copy with n_train/n_test set: the user's values, else the benchmark's for the mode."""
        values = asdict(self)
        defaults = {**self.MODES[self.mode], **((sizes or {}).get(self.mode, {}))}
        for key in ("n_train", "n_test"):
            values[key] = values[key] or defaults[key]
        return RunConfig(**values)

    def benchmark_list(self) -> list[str]:
        names = [b.strip() for b in self.benchmarks.split(",") if b.strip()]
        if names in (["default"], ["all"]):
            from selfexplain.benchmarks import default_suite, list_benchmarks

            return default_suite() if names == ["default"] else list(list_benchmarks())
        return names

    def save(self, path: Path, identity: dict | None = None) -> None:
        """config.json: the fields, plus (for a run) its full identity under "identity"."""
        from selfexplain.runs.atomic import write_json

        write_json(path, {**asdict(self), **({"identity": identity} if identity is not None else {})})

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        data = json.loads(path.read_text())
        data.pop("identity", None)  # what the run computed from these fields; recomputed, never read back
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**data)


def parse_shard(given: str) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 1 <= I <= N (1-based: shards 1/2 and 2/2 make a run); '' -> None."""
    if not isinstance(given, str):
        raise ConfigError(f"--shard must be I/N, e.g. 1/4, not {given!r}")
    text = given.strip()
    if not text:
        return None
    parts = text.split("/")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        i, n = (int(p) for p in parts)
        if 1 <= i <= n <= MAX_ITEMS:
            return i, n
    raise ConfigError(f"--shard must be I/N with 1 <= I <= N (1-based: --shard 1/4 ... --shard 4/4 for four "
                      f"shards), not {given!r}")


def shard_dir_name(i: int, n: int) -> str:
    """The subdirectory of --output-dir that holds shard I of N."""
    return f"shard-{i}-of-{n}"


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _int_list(option: str, given: str, low: int, high: int) -> list[int]:
    """Comma-separated integers in [low, high], each once; '' is the empty list."""
    if not isinstance(given, str):
        raise ConfigError(f"{option} must be comma-separated integers, not {given!r}")
    parts = [p.strip() for p in given.split(",")]
    if parts == [""]:
        return []
    values = []
    for p in parts:
        try:
            value = int(p)
        except ValueError:
            raise ConfigError(f"{option} must be comma-separated integers in [{low:,}, {high:,}], e.g. "
                              f"{option} {low},{2 * low},{4 * low}; {p!r} in {given!r} is not one") from None
        if not low <= value <= high:
            raise ConfigError(f"{option}: {value:,} in {given!r} is outside [{low:,}, {high:,}]")
        values.append(value)
    _no_duplicates(option, given, [str(v) for v in values])
    return values


def _no_duplicates(option: str, given: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{option}: {name!r} is listed twice in {given!r}; name each once")
        seen.add(name)


def check_output_dir(path: str | Path, option: str = "--output-dir") -> Path:
    """Fail fast (ConfigError, one line) unless `path` is, or can be created as, a writable directory
    (`option`: the CLI option the path came from, named in the message).

    Creates nothing that stays: an existing directory is probed with a temporary file, a missing
    one through its nearest existing ancestor with a temporary directory; both are removed at once.
    """
    if not str(path).strip():
        raise ConfigError(f"output directory must not be empty; pass a directory to {option}")
    path = Path(path)
    probe = path
    try:
        while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
            probe = probe.parent
        if probe.is_symlink() and not probe.exists():
            raise ConfigError(f"output directory {path}: {probe} is a broken symbolic link")
        if not probe.is_dir():
            what = "is" if probe == path else f"is inside {probe}, which is"
            raise ConfigError(f"output directory {path} {what} an existing file, not a directory; "
                              f"pass another {option}")
        if probe == path:
            fd, tmp = tempfile.mkstemp(dir=path, prefix=".selfexplain-write-test-")
            os.close(fd)
            os.unlink(tmp)
        else:
            os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".selfexplain-write-test-"))
    except OSError as exc:
        reason = "the filesystem is read-only" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        where = f"cannot write in {path}" if probe == path else f"cannot create {path} in {probe}"
        raise ConfigError(f"output directory {path}: {where} ({reason}); pass another {option}") from exc
    return path
