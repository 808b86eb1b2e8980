"""Tiny random-weight models built in code: no download, seconds to run."""

from __future__ import annotations

import json
import os
import re
from importlib.resources import files
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["SELFEXPLAIN_FP32"] = "1"  # exact numerics in unit tests
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SPECIALS = ["<pad>", "<eos>", "<unk>", "<filename>"]


def _vocab() -> list[str]:
    """Every word of the embedded facts and the patching templates, so prompts tokenize fully."""
    words: set[str] = set()
    text = "".join(files(package).joinpath(name).read_text(encoding="utf-8") for package, name in (
        ("selfexplain.data", "facts.jsonl"), ("selfexplain.data", "relations.json"),
        ("selfexplain.benchmarks.patching", "prompts.json"), ("selfexplain.benchmarks.ablation", "prompts.json")))
    words.update(re.findall(r"\w+|[^\w\s]", text))
    return SPECIALS + sorted(words)


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_vocab())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", additional_special_tokens=["<filename>"])


def make_model(vocab_size: int, hidden: int = 32, layers: int = 4, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      initializer_range=0.3)  # larger than default so logits can be confident
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture()
def tiny(tokenizer):
    from selfexplain.models.loading import wrap_model

    return wrap_model(make_model(len(tokenizer)), tokenizer, name="tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer):
    """Two saved tiny models of different hidden sizes: a subject and an 'other' explainer."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, hidden, layers in (("subject", 32, 4), ("other", 48, 3)):
        model = make_model(len(tokenizer), hidden, layers, seed=1 if name == "other" else 0)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFEXPLAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def read_json(path: Path):
    return json.loads(path.read_text())


def pytest_collection_modifyitems(config, items):
    """Integration tests (the real default model) are slow too: `pytest -m "not slow"` is the fast loop."""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.slow)
