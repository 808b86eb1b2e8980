"""One training path for every LoRA explainer (self, other; one benchmark or several).

Records from any benchmarks are (query, answer, optional vector) triples, so a multitask
adapter is simply training on the union of their records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from selfexplain.distributed import DataParallel
from selfexplain.runs import faults
from selfexplain.runs.atomic import write_json
from selfexplain.errors import TrainingError
from selfexplain.models.generation import encode_answer, encode_query, length_batches
from selfexplain.techniques.interventions import inject_at_placeholder, left_pad
from selfexplain.models.loading import LoadedModel, decoder_layers, linears_in_fp32
from selfexplain.models.prefix_cache import after_prefix, cache_input, prefix_cache, repeat_cache, shared_prefix_length
from selfexplain.records import Record


@contextlib.contextmanager
def peft_quiet() -> Iterator[None]:
    """PEFT (0.21) reads `model.is_gradient_checkpointing`, which transformers 5.25 deprecates with a
    FutureWarning on every adapter: the cause is upstream, so that one warning is filtered here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@dataclass
class TrainConfig:
    """Hyper-parameters of LoRA explainer training (saved next to the adapter)."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    # LoRA on the top fraction of layers only. Without a trainable input projector, gradients
    # then stop at the lowest adapted layer (about 35% less compute per step at 0.5).
    lora_layer_fraction: float = 1.0
    learning_rate: float = 1e-3
    epochs: float = 2.0
    batch_size: int = 8
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    balance_labels: bool = True  # weight examples by inverse frequency of context['label']
    # Passes over a benchmark's batches per epoch (default 1): a benchmark with few, costly
    # records (rationales) gets more steps without repeating every other benchmark's.
    benchmark_repeats: dict[str, int] = field(default_factory=dict)
    seed: int = 0


class Projector(nn.Module):
    """Maps an injected vector into the explainer's embedding space.

    Vectors are normalised to the explainer's mean token-embedding norm (residual activations
    are far larger than embeddings); a linear map is trained when hidden sizes differ
    (the `other` explainer), and is the identity otherwise (the `self` explainer).
    """

    def __init__(self, in_dim: int, out_dim: int, target_norm: float):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.register_buffer("target_norm", torch.tensor(float(target_norm)))
        self.linear = nn.Linear(in_dim, out_dim, bias=False) if in_dim != out_dim else None
        if self.linear is not None:
            nn.init.orthogonal_(self.linear.weight)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = v.float()
        v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        if self.linear is not None:
            v = self.linear(v)
            v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        return v * self.target_norm

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "target_norm": float(self.target_norm)}


def make_projector(loaded: LoadedModel, vector_dim: int) -> Projector:
    emb = loaded.model.get_input_embeddings().weight.detach().float()
    norm = emb.norm(dim=-1).mean().item()
    if hasattr(loaded.model.get_input_embeddings(), "embed_scale"):  # Gemma scales by sqrt(d)
        norm *= float(loaded.model.get_input_embeddings().embed_scale)
    return Projector(vector_dim, loaded.hidden_size, norm).to(loaded.device)


def _examples(loaded: LoadedModel, records: Sequence[Record]) -> list[tuple[list[int], list[int]]]:
    return [(encode_query(loaded, r.query), encode_answer(loaded, " " + r.answer.strip())) for r in records]


# A batch's common prompt prefix shorter than this is recomputed per row (not worth a call).
MIN_SHARED_PREFIX = 8


def answer_loss(loaded: LoadedModel, prompts, answers, vectors, projector,
                weights: torch.Tensor | None = None, share_prefix: bool = True,
                total_weight: float | None = None) -> torch.Tensor:
    """Cross-entropy on answer tokens only; logits computed just for the answer positions.

    The batch's common prompt prefix (a chat header, a shared instruction) runs once and its
    KV cache is repeated for every row; gradients flow back through it, so the loss and its
    gradients equal those of the full rows. Each example's mean token loss is weighted by
    `weights` (class balancing). `total_weight`: divide the weighted sum by this instead of
    this batch's own total (a data-parallel process's share of a global batch).
    """
    n_shared = shared_prefix_length(prompts, loaded.placeholder_id) if share_prefix and len(prompts) > 1 else 0
    if n_shared < MIN_SHARED_PREFIX:
        n_shared = 0
    rows = [p[n_shared:] + a for p, a in zip(prompts, answers)]
    batch = left_pad(rows, loaded.tokenizer.pad_token_id, loaded.device)
    keep = max(len(a) for a in answers) + 1
    # Rows are left-padded, so answers end together. Kept position j predicts the token after
    # it; it is scored when that token belongs to the row's answer.
    lengths = torch.tensor([len(a) for a in answers], device=loaded.device)
    j = torch.arange(keep, device=loaded.device)
    scored = (j[None] >= keep - 1 - lengths[:, None]) & (j[None] < keep - 1)
    targets = torch.nn.functional.pad(batch.input_ids[:, -keep + 1:], (0, 1))[scored]
    inputs = batch.model_inputs()
    with contiguous_head_input(loaded.model), loaded.autocast():
        if n_shared:
            prefix = torch.tensor([list(prompts[0][:n_shared])], device=loaded.device)
            past = repeat_cache(prefix_cache(loaded.model, prefix), len(rows))  # in place: it requires grad
            mask, positions = after_prefix(n_shared, batch.attention_mask, batch.position_ids)
            inputs = {"input_ids": batch.input_ids, "attention_mask": mask, "position_ids": positions,
                      **cache_input(past), "use_cache": True}
        with inject_at_placeholder(loaded.model, loaded.placeholder_id, vectors, projector):
            logits = loaded.model(**inputs, logits_to_keep=keep).logits
    # Only the scored rows of the logits, contiguous: a log-softmax over a strided vocabulary
    # axis (and the zero-filled gradient of a slice) cost Gemma's 262k vocabulary ~10% of a step.
    token_loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1])[scored.flatten()].float(),
                                             targets, reduction="none")
    row = torch.arange(len(rows), device=loaded.device)[:, None].expand_as(scored)[scored]
    per_example = torch.zeros(len(rows), device=loaded.device).index_add(0, row, token_loss) / lengths.clamp(min=1)
    if total_weight is not None:
        w = weights.to(per_example.device) if weights is not None else torch.ones_like(per_example)
        return (per_example * w).sum() / total_weight
    if weights is None:
        return per_example.mean()
    weights = weights.to(per_example.device)
    return (per_example * weights).sum() / weights.sum()


@contextlib.contextmanager
def contiguous_head_input(model: nn.Module) -> Iterator[None]:
    """Make the output head's input contiguous while training.

    Models slice the last positions (`logits_to_keep`) before the head; a non-contiguous input
    that requires grad makes torch.matmul broadcast the head weight into a batched matmul
    instead of one matrix product: for Gemma's 262k vocabulary that was 40% of a training step
    (bench/training_speed.py measures it).
    """
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def class_weights(records: Sequence[Record]) -> list[float]:
    """Inverse-frequency weights over `context['label']`, within each benchmark.

    Rare answer kinds (e.g. "changes to") get as much weight as common ones, without
    computing more ground truth; each benchmark keeps its total weight (its record count),
    so a multitask mix is not reweighted. Records without a label weigh 1.
    """
    weights = [1.0] * len(records)
    for bench in {r.benchmark for r in records}:
        idx = [i for i, r in enumerate(records) if r.benchmark == bench]
        labels = [records[i].context.get("label") for i in idx]
        counts = Counter(labels)
        if None in counts or len(counts) < 2:
            continue
        for i, label in zip(idx, labels):
            weights[i] = len(idx) / (len(counts) * counts[label])
    return weights


def training_steps(records: Sequence[Record], config: TrainConfig) -> int:
    """Optimizer steps for `records` (one batch per step, `epochs` passes, repeats included)."""
    return max(1, math.ceil(len(training_batches(records, config)) * config.epochs))


def training_batches(records: Sequence[Record], config: TrainConfig,
                     lengths: Sequence[int] | None = None) -> list[list[int]]:
    """One epoch's batches (index lists): each benchmark's, repeated `benchmark_repeats` times.

    A batch holds one benchmark's records of similar length (little padding; `lengths` in
    tokens, else query characters), never mixing records with and without an injected vector.
    Batches are not grouped by shared prompt prefix: one item's records in one batch made the
    `other` explainer learn far worse on patching (exact match 49.2 vs 64.5, same steps).
    """
    sizes = lengths if lengths is not None else [len(r.query) for r in records]
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.benchmark, r.vector is not None), []).append(i)
    batches = []
    for (bench, _), idx in sorted(groups.items()):
        chunks = [[idx[j] for j in b] for b in length_batches([sizes[i] for i in idx], config.batch_size)]
        batches += chunks * max(1, config.benchmark_repeats.get(bench, 1))
    return batches


def _lora_targets(loaded: LoadedModel, config: TrainConfig) -> dict:
    if config.lora_layer_fraction >= 1.0:
        return {"target_modules": config.target_modules}
    layers = decoder_layers(loaded.model)
    names = sorted({name.split(".")[-1] for name, m in layers[0].named_modules() if isinstance(m, nn.Linear)})
    first = int(round(len(layers) * (1 - config.lora_layer_fraction)))
    return {"target_modules": names, "layers_to_transform": list(range(first, len(layers)))}


def train_explainer(
    loaded: LoadedModel,
    records: Sequence[Record],
    config: TrainConfig,
    output_dir: Path,
    vector_dim: int | None = None,
    progress=None,
) -> tuple[LoadedModel, Projector | None]:
    """Train a LoRA adapter (and a vector projector) on records; save both to output_dir.

    `loaded.model` is wrapped in place by PEFT: pass a copy if the base model is needed
    unchanged afterwards. Under `accelerate launch` each process trains on its share of every
    batch and gradients are summed (selfexplain/distributed.py); process 0 writes checkpoints
    and the adapter.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      task_type="CAUSAL_LM", **_lora_targets(loaded, config))
    with linears_in_fp32(loaded.model), peft_quiet():  # adapters initialised exactly as on fp32 weights
        peft_model = get_peft_model(loaded.model, lora)
    trained = LoadedModel(peft_model, loaded.tokenizer, loaded.name, loaded.source, loaded.placeholder_id)
    projector = make_projector(loaded, vector_dim) if vector_dim else None

    examples = _examples(trained, records)
    weights = torch.tensor(class_weights(records)) if config.balance_labels else None
    batches = training_batches(records, config, [len(p) + len(a) for p, a in examples])
    n_steps = max(1, math.ceil(len(batches) * config.epochs))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    if projector is not None:
        params += [p for p in projector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    warmup = max(1, int(config.warmup_fraction * n_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (n_steps - s) / max(1, n_steps - warmup))))

    peft_model.train()
    dp = DataParallel.current()
    losses: list[float] = []
    start = time.perf_counter()
    order: list[list[int]] = []
    every = max(1, n_steps // CHECKPOINTS_PER_RUN)
    state = _Checkpoint(output_dir / "checkpoint.pt", fingerprint(records, config))
    first_step = state.restore(peft_model, projector, optimizer, scheduler, rng)
    if first_step:
        order, losses = state.order, state.losses
        if progress is not None:
            progress(first_step, n_steps, losses[-1])
    for step in range(first_step, n_steps):
        if not order:
            order = batches[:]
            rng.shuffle(order)
        idx = order.pop()
        loss = _step_loss(trained, records, examples, idx, projector, weights, dp)
        if loss.requires_grad:
            loss.backward()
        dp.sum_gradients(params)
        loss = dp.sum(loss.detach())  # the global batch's loss, in every process
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step}: lower --learning-rate")
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % every == 0 and step + 1 < n_steps and dp.is_main:
            state.save(step + 1, peft_model, projector, optimizer, scheduler, rng, order, losses)
        if progress is not None:
            progress(step + 1, n_steps, loss.item())
    peft_model.eval()
    if not dp.is_main:  # every process holds the same weights; process 0 writes them
        dp.barrier()
        return trained, projector

    output_dir.mkdir(parents=True, exist_ok=True)
    # Embeddings are never adapted: say so, or PEFT looks for the base model's config.json (absent
    # for GGUF-loaded models) to decide, and warns that it found none.
    peft_model.save_pretrained(output_dir, save_embedding_layers=False)
    summary = {"train_config": asdict(config), "n_records": len(records), "steps": n_steps,
               "fingerprint": fingerprint(records, config),
               "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
               "seconds": time.perf_counter() - start, "base_model": loaded.name}
    if projector is not None:
        torch.save(projector.state_dict(), output_dir / "projector.pt")
        summary["projector"] = projector.config()
    faults.checkpoint("adapter-saved")
    write_json(output_dir / "selfexplain_training.json", summary)  # written last: its presence means complete
    state.path.unlink(missing_ok=True)
    dp.barrier()
    return trained, projector


def _step_loss(trained: LoadedModel, records: Sequence[Record], examples, idx: list[int], projector,
               weights: torch.Tensor | None, dp: DataParallel) -> torch.Tensor:
    """The loss of global batch `idx`; with several processes, this process's share of it (its
    rows' weighted loss over the whole batch's weight, so the shares sum to the batch loss)."""
    rows = dp.shard(idx) if dp.world > 1 else idx
    total = None
    if dp.world > 1:
        total = float(weights[idx].sum()) if weights is not None else float(len(idx))
        if not rows:  # fewer rows than processes: this one contributes nothing
            return torch.zeros((), device=trained.device)
    vecs = [records[i].vector for i in rows]
    vectors = torch.stack(vecs) if vecs[0] is not None else None  # batches never mix kinds
    return answer_loss(trained, [examples[i][0] for i in rows], [examples[i][1] for i in rows],
                       vectors, projector, weights[rows] if weights is not None else None, total_weight=total)


# Training state is saved this many times per run (and removed when training ends): a killed run
# resumes from the last one and ends with exactly the weights of an uninterrupted run.
CHECKPOINTS_PER_RUN = 10


class _Checkpoint:
    """Trainable weights, optimizer, scheduler, RNG states and data order, written atomically."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint
        self.order: list[list[int]] = []
        self.losses: list[float] = []

    def save(self, step: int, model: nn.Module, projector: nn.Module | None, optimizer, scheduler,
             rng: random.Random, order: list[list[int]], losses: list[float]) -> None:
        state = {"fingerprint": self.fingerprint, "step": step,
                 "weights": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                 "projector": projector.state_dict() if projector is not None else None,
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                 "order": order, "losses": losses}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def restore(self, model: nn.Module, projector: nn.Module | None, optimizer, scheduler,
                rng: random.Random) -> int:
        """The step to continue from: the checkpoint's if it belongs to this training, else 0."""
        if not self.path.is_file():
            return 0
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - an unreadable checkpoint only costs a restart
            return 0
        if state.get("fingerprint") != self.fingerprint:
            return 0
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["weights"].items():
                params[name].copy_(value)
        if projector is not None and state["projector"] is not None:
            projector.load_state_dict(state["projector"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.order, self.losses = state["order"], state["losses"]
        return int(state["step"])


def fingerprint(records: Sequence[Record], config: TrainConfig) -> str:
    """Identifies what an adapter was trained on: record ids, queries and answers, and the config."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for r in records:
        digest.update(f"{r.id}\x00{r.query}\x00{r.answer}\x00".encode())
    return digest.hexdigest()


def load_trained(loaded: LoadedModel, records: Sequence[Record], config: TrainConfig, output_dir: Path,
                 vector_dim: int | None) -> tuple[LoadedModel, Projector | None] | None:
    """The adapter (and projector) saved in output_dir if it was trained on exactly these
    records with this config; None otherwise (then train)."""
    info_path = output_dir / "selfexplain_training.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError:
        return None
    if info.get("fingerprint") != fingerprint(records, config):
        return None
    if vector_dim and not (output_dir / "projector.pt").is_file():
        return None  # an adapter trained with vectors but no projector saved: retrain
    return load_adapter(loaded, output_dir)


def check_adapter_dir(adapter_dir: Path) -> None:
    """A one-line TrainingError unless adapter_dir holds a readable PEFT adapter config (checked
    before any model loads)."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"no adapter at {adapter_dir} (no adapter_config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path} is unreadable ({exc}); retrain with `selfexplain run` or pass another "
                            "--adapter") from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise TrainingError(f"{path} is not a PEFT adapter config (no 'peft_type'); retrain with `selfexplain run` "
                            "or pass another --adapter")


def load_adapter(loaded: LoadedModel, adapter_dir: Path) -> tuple[LoadedModel, Projector | None]:
    """A saved adapter (and its projector, when projector.pt exists) on `loaded`, whatever it
    was trained on (`load_trained` checks that first). PEFT wraps `loaded.model` in place: pass
    a copy if the base model is needed unchanged."""
    from peft import PeftModel

    check_adapter_dir(adapter_dir)
    with peft_quiet():
        model = PeftModel.from_pretrained(loaded.model, adapter_dir)
    model.eval()
    trained = LoadedModel(model, loaded.tokenizer, loaded.name, loaded.source, loaded.placeholder_id)
    projector = None
    path = adapter_dir / "projector.pt"
    if path.is_file():
        state = torch.load(path, map_location=loaded.device)
        in_dim = state["linear.weight"].shape[1] if "linear.weight" in state else loaded.hidden_size
        projector = make_projector(loaded, in_dim)
        projector.load_state_dict(state)
    return trained, projector
