import subprocess
import sys

import pytest

from selfexplain.errors import ModelLoadError
from selfexplain.models.loading import decoder_layers, load_model, wrap_model


def test_load_from_directory(tiny_dirs):
    loaded = load_model(str(tiny_dirs["subject"]), device="cpu")
    assert loaded.num_layers == 4 and loaded.hidden_size == 32
    assert loaded.tokenizer.convert_ids_to_tokens(loaded.placeholder_id) == "<filename>"


@pytest.mark.parametrize("spec,message", [
    ("/no/such/model", "not found"),
    ("/no/such/model.gguf", "GGUF file not found"),
    ("smollm-typo", "not found"),
])
def test_missing_model_is_one_clear_error(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_corrupt_gguf(tmp_path, cache):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read GGUF"):
        load_model(str(bad))


def test_unsupported_architecture(tokenizer):
    from transformers import BertConfig, BertLMHeadModel

    model = BertLMHeadModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, is_decoder=True))
    with pytest.raises(ModelLoadError, match="unsupported architecture 'bert'"):
        wrap_model(model, tokenizer, name="bert")


def test_decoder_layers_through_peft(tiny):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny.model, LoraConfig(r=2, target_modules="all-linear"))
    assert len(decoder_layers(peft_model)) == 4


def test_cli_bad_model_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selfexplain.cli", "run", "--subject", "/no/such/model",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "not found" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_bad_config_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selfexplain.cli", "run", "--benchmarks", "nope",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown benchmark 'nope'" in proc.stderr


def test_bf16_linear_storage_is_bit_identical_under_autocast(tokenizer):
    """Weights stored as the bf16 copies autocast would make: same logits, fp32 embeddings."""
    import torch

    from conftest import make_model
    from selfexplain.models.loading import store_linears_in_bf16

    model = make_model(len(tokenizer))
    ids = torch.tensor([[5, 9, 17, 3, 22, 40]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits
    embeddings = model.get_input_embeddings().weight.detach().clone()
    assert store_linears_in_bf16(model) == 4 * 7 + 1  # q, k, v, o, gate, up, down per layer; the head
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(model.get_input_embeddings().weight, embeddings)  # untied, not rounded


def test_load_model_stores_bf16_linears_only_where_autocast_is_bf16(tiny_dirs, monkeypatch):
    import torch

    from selfexplain.models import loading as models

    def dtypes(loaded):
        m = loaded.model
        return m.model.layers[0].mlp.up_proj.weight.dtype, m.get_input_embeddings().weight.dtype
    monkeypatch.setattr(models, "_CPU_BF16", True)
    monkeypatch.setenv("SELFEXPLAIN_FP32", "0")
    assert dtypes(load_model(str(tiny_dirs["subject"]), device="cpu")) == (torch.bfloat16, torch.float32)
    monkeypatch.setattr(models, "_CPU_BF16", False)
    assert dtypes(load_model(str(tiny_dirs["subject"]), device="cpu")) == (torch.float32, torch.float32)
