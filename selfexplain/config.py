"""Typed run configuration: saved next to every run, and the source of the CLI's options."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from selfexplain.errors import ConfigError

ANSWER_MODES = ("ranked", "generated")


@dataclass
class RunConfig:
    """Everything that determines a run's results (same config + seed -> same numbers)."""

    benchmarks: str = field(default="patching", metadata={"help": "comma-separated benchmark names"})
    subject: str = field(default="smollm2", metadata={"help": "subject model: registered name, .gguf, dir or HF id"})
    other: str = field(default="gemma3-270m", metadata={"help": "model of the 'other' explainer"})
    explainers: str = field(default="all", metadata={"help": "comma-separated explainer names, or 'all'"})
    data_root: str = field(default="", metadata={"help": "directory of the shared datasets (or $SELFEXPLAIN_DATA_ROOT)"})
    sources: str = field(default="facts", metadata={"help": "data sources, each 'name' or 'name:PATH': facts "
                                                     "(embedded), counterfact, lre (patching), mmlu (ablation), movies, boolq, "
                                                     "fever, multirc, cose (rationales; default movies,fever,cose)"})
    output_dir: str = field(default="runs", metadata={"help": "where run directories are written"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, splits, training and bootstrap"})
    mode: str = field(default="quick", metadata={"help": "quick (CPU, minutes) or full (GPU)"})
    n_train: int = field(default=0, metadata={"help": "training records per benchmark (0: the benchmark's "
                                               "default for the mode)"})
    n_test: int = field(default=0, metadata={"help": "test records per benchmark (0: the benchmark's default "
                                              "for the mode)"})
    epochs: float = field(default=0.0, metadata={"help": "training epochs (0: the mode's default)"})
    learning_rate: float = field(default=2e-3, metadata={"help": "LoRA learning rate"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    batch_size: int = field(default=0, metadata={"help": "training batch size (0: the mode's default, quick 4, "
                                                  "full 8)"})
    n_attribution: int = field(default=100, metadata={"help": "items per split for the slow attribution "
                                                       "baselines: a balanced test subsample and as many training "
                                                       "items to fit their threshold (0: all)"})
    budget_tokens: int = field(default=0, metadata={"help": "rationales: document token budget per input (0: the "
                                                     "mode's default, quick 128, full 512)"})
    answers: str = field(default="ranked", metadata={"help": "how generating explainers answer where the benchmark "
                                                     "has a closed answer set (patching, ablation): ranked (the "
                                                     "likeliest candidate) or generated (free greedy decoding)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow models with custom code"})

    # Sizes are per benchmark (Benchmark.sizes) unless given; these are the fallbacks.
    # Quick mode trains one epoch in batches of 4: on the 2-core CPU, optimizer steps count more
    # than examples seen. Patching `self` exact match (fp32 weights): batch 8 x 2 epochs 77.2
    # (498 s of training), batch 8 x 1 epoch 62.7 (231 s), batch 4 x 1 epoch 70.2 (224 s),
    # batch 2 x 1 epoch 77.0 (328 s); `other` 78.8 / 78.2 / 77.5 (870 / 356 / 393 s) for the
    # first three. Ablation `self`: batch 8 x 2 epochs and batch 4 x 1 epoch both 71.7. With bf16
    # weight storage, batch 2 left `other` unstable (46.5, final loss 0.89): README, Notes.
    MODES = {"quick": {"n_train": 1500, "n_test": 400, "epochs": 1.0, "batch_size": 4},
             "full": {"n_train": 20000, "n_test": 2000, "epochs": 2.0, "batch_size": 8}}

    def resolved(self) -> "RunConfig":
        """A copy with the mode's epochs and batch size filled in and values checked (sizes:
        `for_benchmark`)."""
        if self.mode not in self.MODES:
            raise ConfigError(f"mode must be one of {', '.join(self.MODES)}, not '{self.mode}'")
        values = asdict(self)
        for key in ("epochs", "batch_size"):
            values[key] = values[key] or self.MODES[self.mode][key]
        cfg = RunConfig(**values)
        if (cfg.n_train and cfg.n_train < 8) or (cfg.n_test and cfg.n_test < 4):
            raise ConfigError("n_train must be >= 8 and n_test >= 4")
        if cfg.budget_tokens and cfg.budget_tokens < 32:
            raise ConfigError("budget_tokens must be >= 32 (or 0 for the mode's default)")
        if cfg.answers not in ANSWER_MODES:
            raise ConfigError(f"answers must be one of {', '.join(ANSWER_MODES)}, not '{cfg.answers}'")
        if cfg.epochs <= 0 or cfg.batch_size < 1:
            raise ConfigError("epochs must be > 0 and batch_size >= 1 (or 0 for the mode's default)")
        if not 0 < cfg.learning_rate < 1:
            raise ConfigError("learning_rate must be in (0, 1)")
        return cfg

    def for_benchmark(self, sizes: dict[str, dict[str, int]] | None = None) -> "RunConfig":
        """A copy with n_train/n_test set: the user's values, else the benchmark's for the mode."""
        values = asdict(self)
        defaults = {**self.MODES[self.mode], **((sizes or {}).get(self.mode, {}))}
        for key in ("n_train", "n_test"):
            values[key] = values[key] or defaults[key]
        return RunConfig(**values)

    def benchmark_list(self) -> list[str]:
        return [b.strip() for b in self.benchmarks.split(",") if b.strip()]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**data)
