import pytest
import torch
from peft import LoraConfig, get_peft_model

from selfexplain.techniques.interventions import Patch, inject_at_placeholder, left_pad, patch_residual, record_residual


def _ids(tok, text):
    return torch.tensor([tok(text)["input_ids"]])


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_record_residual_matches_hidden_states(tiny):
    ids = _ids(tiny.tokenizer, "What is the capital of France ?")
    with record_residual(tiny.model, [0, 3]) as resid, torch.no_grad():
        out = tiny.model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(resid[0], out.hidden_states[1])
    assert resid[3].shape == (1, ids.shape[1], 32)


def test_self_patch_changes_nothing(tiny):
    ids = _ids(tiny.tokenizer, "What is the capital of France ?")
    layers = list(range(tiny.num_layers))
    with record_residual(tiny.model, layers) as resid, torch.no_grad():
        clean = tiny.model(input_ids=ids).logits
    patches = [Patch(0, l, p, resid[l][0, p]) for l in layers for p in range(ids.shape[1])]
    with patch_residual(tiny.model, patches):
        patched = _logits(tiny.model, ids)
    assert torch.equal(clean, patched)


def test_patching_everything_from_b_reproduces_b(tiny):
    model = tiny.model.double()  # float64, so "reproduces" is not blurred by float32 BLAS rounding
    a = _ids(tiny.tokenizer, "What is the capital of France ?")
    b = _ids(tiny.tokenizer, "What is the capital of Japan ?")
    layers = list(range(tiny.num_layers))
    with record_residual(model, layers) as resid, torch.no_grad():
        logits_b = model(input_ids=b).logits
    patches = [Patch(0, l, p, resid[l][0, p]) for l in layers for p in range(a.shape[1])]
    with patch_residual(model, patches):
        patched = _logits(model, a)
    assert not torch.allclose(_logits(model, a), logits_b)
    torch.testing.assert_close(patched, logits_b, rtol=0, atol=1e-10)


def test_batched_patches_equal_one_at_a_time(tiny):
    # float64: float32 BLAS kernels differ in the last bits across batch shapes (measured up to
    # 1.0e-5 on logits of ~2.4, depending on the random weights), which would blur "exactly".
    model = tiny.model.double()  # the fixture is per-test, so converting in place is safe
    a = _ids(tiny.tokenizer, "What is the capital of France ?")
    b = _ids(tiny.tokenizer, "What is the capital of Japan ?")
    with record_residual(model, range(tiny.num_layers)) as resid, torch.no_grad():
        model(input_ids=b)
    cells = [(l, p) for l in range(tiny.num_layers) for p in range(a.shape[1])]
    singles = []
    for l, p in cells:
        with patch_residual(model, [Patch(0, l, p, resid[l][0, p])]):
            singles.append(_logits(model, a)[0, -1])
    batch = a.repeat(len(cells), 1)
    with patch_residual(model, [Patch(i, l, p, resid[l][0, p]) for i, (l, p) in enumerate(cells)]):
        batched = _logits(model, batch)[:, -1]
    torch.testing.assert_close(batched, torch.stack(singles), rtol=0, atol=1e-10)
    assert torch.equal(batched.argmax(-1), torch.stack(singles).argmax(-1))
    clean = _logits(model, a)[0, -1]
    changed = {(l, p) for (l, p), s in zip(cells, singles) if not torch.equal(s, clean)}
    # Known by construction: the prompts differ only at position 5 ("France"/"Japan"), so only
    # patches at 5 (below the last layer, which nothing downstream reads) and at 6 matter.
    n = tiny.num_layers
    assert changed == {(l, 5) for l in range(n - 1)} | {(l, 6) for l in range(n)}


def test_patching_works_on_peft_model(tiny):
    ids = _ids(tiny.tokenizer, "What is the capital of France ?")
    peft_model = get_peft_model(tiny.model, LoraConfig(r=4, target_modules="all-linear"))
    vec = torch.randn(32) * 5
    base = _logits(peft_model, ids)
    with patch_residual(peft_model, [Patch(0, 1, 2, vec)]):
        patched = _logits(peft_model, ids)
    assert not torch.allclose(base, patched)
    # Hooks run in registration order: record after patching to see the patched value.
    with patch_residual(peft_model, [Patch(0, 1, 2, vec)]), record_residual(peft_model, [1]) as resid:
        _logits(peft_model, ids)
    assert torch.equal(resid[1][0, 2], vec)


def test_inject_at_placeholder(tiny):
    tok = tiny.tokenizer
    ids = _ids(tok, "Patch <filename> Answer")
    assert int((ids == tiny.placeholder_id).sum()) == 1
    own = tiny.model.get_input_embeddings().weight[tiny.placeholder_id].detach()
    clean = _logits(tiny.model, ids)
    with inject_at_placeholder(tiny.model, tiny.placeholder_id, own[None]):
        same = _logits(tiny.model, ids)
    with inject_at_placeholder(tiny.model, tiny.placeholder_id, torch.randn(1, 32) * 3):
        other = _logits(tiny.model, ids)
    assert torch.equal(clean, same)
    assert not torch.allclose(clean, other)
    with pytest.raises(ValueError, match="placeholder"):
        with inject_at_placeholder(tiny.model, tiny.placeholder_id, torch.randn(2, 32)):
            _logits(tiny.model, ids)


def test_left_pad_positions():
    batch = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch.offsets == [0, 2]


def test_skipping_clean_layers_gives_the_full_forward(tiny):
    """Rows that start at their first patched layer, continuing the clean prefix's KV cache, get
    the logits of a full forward of the patched prompt (float64: exact up to summation order)."""
    from selfexplain.models.prefix_cache import cache_input, output_cache, repeat_cache
    from selfexplain.techniques.interventions import skip_clean_layers

    model = tiny.model.double()
    a = _ids(tiny.tokenizer, "What is the capital of France ?")
    b = _ids(tiny.tokenizer, "What is the capital of Japan ?")
    layers = list(range(tiny.num_layers))
    with record_residual(model, layers) as cf, torch.no_grad():
        model(input_ids=b)
    with record_residual(model, layers) as clean, torch.no_grad():
        cache = output_cache(model(input_ids=a, use_cache=True))
    start = 5  # the patched position (France | Japan); rows patch layers sorted by the first
    blocks = [(0,), (1, 2), (2, 3), (3,)]
    patches = [Patch(r, l, start, cf[l][0, start]) for r, ls in enumerate(blocks) for l in ls]
    full = []
    for r, ls in enumerate(blocks):
        with patch_residual(model, [Patch(0, l, start, cf[l][0, start]) for l in ls]):
            full.append(_logits(model, a)[0, -1])
    n = len(blocks)
    past = repeat_cache(cache, n, keep=start, copy=True)
    suffix = a[:, start:].expand(n, -1)
    positions = torch.arange(start, a.shape[1]).expand(n, -1)
    shifted = [Patch(p.row, p.layer, 0, p.vector) for p in patches]
    with torch.no_grad(), patch_residual(model, shifted), skip_clean_layers(
            model, [ls[0] for ls in blocks], {l: h[:, start:] for l, h in clean.items()}, past):
        got = model(input_ids=suffix, **cache_input(past), position_ids=positions).logits[:, -1]
    torch.testing.assert_close(got, torch.stack(full), rtol=0, atol=1e-10)
    assert not torch.allclose(full[0], full[3])  # the rows differ: the patches matter


def test_skipping_clean_layers_rejects_unsorted_rows(tiny):
    from selfexplain.models.prefix_cache import output_cache
    from selfexplain.techniques.interventions import skip_clean_layers

    with torch.no_grad():
        cache = output_cache(tiny.model(input_ids=_ids(tiny.tokenizer, "What is"), use_cache=True))
    with pytest.raises(ValueError, match="sorted"):
        with skip_clean_layers(tiny.model, [2, 0], {}, cache):
            pass
