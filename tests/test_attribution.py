"""Attribution methods on tiny random models, checked against cases known by construction."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from selfexplain.techniques.attribution import (
    DEFAULT_PARAMS,
    METHODS,
    Attribution,
    AttributionInput,
    Attributor,
    attention_maps,
    cache_key,
    rollout,
    split_rows,
)
from selfexplain.errors import ConfigError, DataError
from selfexplain.models.loading import wrap_model

PROMPT = "The capital of France is Paris . <pad> What is the capital of France ?"
PAD_POSITION = 7  # "<pad>" in PROMPT: already the baseline token
FAST = {"lime": {"n_samples": 64}, "kernel_shap": {"n_samples": 64}, "integrated_gradients": {"n_steps": 8}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    threads waiting for each other made each tiny forward ~100x slower (0.5 s vs 5 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def logprob(subject, ids: list[int], target: int) -> float:
    """f(x) with a plain full forward: the reference every method is checked against."""
    with torch.no_grad():
        logits = subject.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(logits.float().log_softmax(-1)[target])


def prompt(subject) -> tuple[list[int], int]:
    ids = subject.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert ids[PAD_POSITION] == subject.tokenizer.pad_token_id
    with torch.no_grad():
        target = int(subject.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    return ids, target


def replaced(ids: list[int], positions, token: int) -> list[int]:
    return [token if i in set(positions) else t for i, t in enumerate(ids)]


@pytest.fixture()
def isolated(tokenizer, tiny):
    """The tiny model with every attention output projection zeroed: no information flows
    between positions, so f depends on the last token only. In float64 so that "exactly zero"
    does not hinge on float32 BLAS rounding, which differs across batch shapes and weights."""
    model = copy.deepcopy(tiny.model).double()
    for layer in model.model.layers:
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
    return wrap_model(model, tokenizer, name="isolated", device="cpu")


# ----- 1. isolated last token -----------------------------------------------------------------
def test_isolated_last_token_gets_everything(isolated):
    ids, target = prompt(isolated)
    inp = AttributionInput(ids, target)
    last = len(ids) - 1
    attributor = Attributor(isolated)
    for method in ("occlusion", "integrated_gradients"):
        res = attributor.attribute([inp], method)[0]
        assert max(abs(s) for s in res.scores[:last]) < 1e-6, method
        assert abs(res.scores[last]) > 1e-3 and res.mass([last]) > 0.999, method
    for method in ("lime", "kernel_shap"):
        res = attributor.attribute([inp], method)[0]
        others = max(abs(s) for s in res.scores[:last])
        # KernelSHAP's regression fits y = a + b*z_last exactly; LIME's ridge penalty (alpha=1)
        # leaks a little onto features correlated with z_last in the finite sample (~1% here).
        assert others < (1e-6 if method == "kernel_shap" else 0.02 * abs(res.scores[last])), method
        assert abs(res.scores[last]) > 1e-3, method
    unpenalised = attributor.attribute([inp], "lime", alpha=0.0)[0]
    assert max(abs(s) for s in unpenalised.scores[:last]) < 1e-6


# ----- 2. occlusion by hand; tokens that already are the baseline -----------------------------
def test_occlusion_equals_hand_computed_removal(tiny):
    ids, target = prompt(tiny)
    pad = tiny.tokenizer.pad_token_id
    res = Attributor(tiny).attribute([AttributionInput(ids, target)], "occlusion")[0]
    clean = logprob(tiny, ids, target)
    expected = [clean - logprob(tiny, replaced(ids, [t], pad), target) for t in range(len(ids))]
    assert res.scores == pytest.approx(expected, abs=1e-5)
    assert res.scores[PAD_POSITION] == 0.0
    assert res.params["baseline_token"] == pad
    assert res.forward_passes == len(ids)  # clean run + one row per non-pad token


def test_baseline_token_position_gets_exactly_zero_from_ig(tiny):
    ids, target = prompt(tiny)
    res = Attributor(tiny).attribute([AttributionInput(ids, target)], "integrated_gradients", n_steps=8)[0]
    assert res.scores[PAD_POSITION] == 0.0
    assert sum(abs(s) for s in res.scores) > 1e-3


def test_explicit_baseline_token(tiny):
    ids, target = prompt(tiny)
    other = tiny.tokenizer.unk_token_id
    res = Attributor(tiny).attribute([AttributionInput(ids, target, 3, 6)], "occlusion", baseline_token=other)[0]
    clean = logprob(tiny, ids, target)
    assert res.scores[3:6] == pytest.approx(
        [clean - logprob(tiny, replaced(ids, [t], other), target) for t in range(3, 6)], abs=1e-5)
    assert res.scores[:3] == [0.0] * 3 and res.scores[6:] == [0.0] * (len(ids) - 6)


# ----- 3. integrated-gradients completeness ---------------------------------------------------
def test_integrated_gradients_completeness(tiny):
    ids, target = prompt(tiny)
    start, end = 2, len(ids) - 1
    res = Attributor(tiny).attribute([AttributionInput(ids, target, start, end)], "integrated_gradients",
                                     n_steps=256)[0]
    expected = logprob(tiny, ids, target) - logprob(
        tiny, replaced(ids, range(start, end), tiny.tokenizer.pad_token_id), target)
    # The random tiny model is bumpy along the path (f rises 7 nats unevenly), so the quadrature
    # needs many steps: measured relative error 2.4% at 64 steps, 0.1% at 128, 3e-6 at 256.
    assert abs(expected) > 1.0
    assert sum(res.scores) == pytest.approx(expected, rel=1e-3)
    assert res.forward_passes == 1 + 256  # fixed-context run + one (forward+backward) row per step



def test_integrated_gradients_leaves_weights_untouched_and_trainable(tiny):
    """Weights are frozen while attributing (backward computes no weight gradient) and the
    caller's requires_grad flags come back, even where only some weights were trainable."""
    ids, target = prompt(tiny)
    params = list(tiny.model.parameters())
    params[0].requires_grad_(False)
    flags = [p.requires_grad for p in params]
    seen = []
    handle = tiny.model.register_forward_pre_hook(
        lambda module, args: seen.append(any(p.requires_grad for p in module.parameters())))
    try:
        Attributor(tiny).attribute([AttributionInput(ids, target, 2, len(ids) - 1)], "integrated_gradients",
                                   n_steps=4)
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert [p.requires_grad for p in params] == flags and all(p.grad is None for p in params)

# ----- 4. cached fixed context == full recomputation; batch size does not matter -------------
@pytest.mark.parametrize("method", ["occlusion", "lime", "kernel_shap", "integrated_gradients"])
def test_prefix_cache_and_batch_size_do_not_change_scores(tiny, method):
    ids, target = prompt(tiny)
    inp = AttributionInput(ids, target, start=3, end=len(ids) - 2)
    params = FAST.get(method, {})
    cached = Attributor(tiny, batch_size=32).attribute([inp], method, **params)[0]
    uncached = Attributor(tiny, batch_size=32, reuse_kv=False).attribute([inp], method, **params)[0]
    one_by_one = Attributor(tiny, batch_size=1).attribute([inp], method, **params)[0]
    assert cached.scores == pytest.approx(uncached.scores, abs=1e-5)
    assert cached.scores == pytest.approx(one_by_one.scores, abs=1e-5)
    assert cached.scores[:3] == [0.0] * 3 and cached.scores[-2:] == [0.0, 0.0]
    assert any(abs(s) > 1e-4 for s in cached.scores)


# ----- 5. groups ------------------------------------------------------------------------------
def test_group_occlusion_is_group_removal_shared_by_size(tiny):
    ids, target = prompt(tiny)
    start, end = 1, len(ids) - 1
    groups = [10, 10, 10, 4, 4, 7, 7, 7, 7, 2, 2, 2, 2][: end - start]  # arbitrary labels, any order
    assert len(groups) == end - start
    res = Attributor(tiny).attribute([AttributionInput(ids, target, start, end, groups)], "occlusion")[0]
    clean = logprob(tiny, ids, target)
    pad = tiny.tokenizer.pad_token_id
    for g in set(groups):
        members = [start + i for i, x in enumerate(groups) if x == g]
        effect = clean - logprob(tiny, replaced(ids, members, pad), target)
        assert [res.scores[p] for p in members] == pytest.approx([effect / len(members)] * len(members), abs=1e-5)
        assert sum(res.scores[p] for p in members) == pytest.approx(effect, abs=1e-5)
    assert res.forward_passes == 1 + len(set(groups))


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_sampling_methods_share_group_scores(tiny, method):
    ids, target = prompt(tiny)
    groups = [0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6][: len(ids)]
    res = Attributor(tiny).attribute([AttributionInput(ids, target, groups=groups)], method, **FAST[method])[0]
    for g in set(groups):
        scores = {round(res.scores[i], 6) for i, x in enumerate(groups) if x == g}
        assert len(scores) == 1


def test_kernel_shap_single_feature_is_exact(tiny):
    ids, target = prompt(tiny)
    start, end = 2, 5
    res = Attributor(tiny).attribute([AttributionInput(ids, target, start, end, [0, 0, 0])], "kernel_shap")[0]
    empty = replaced(ids, range(start, end), tiny.tokenizer.pad_token_id)
    effect = logprob(tiny, ids, target) - logprob(tiny, empty, target)
    assert sum(res.scores) == pytest.approx(effect, abs=1e-4)
    lime = Attributor(tiny).attribute([AttributionInput(ids, target, start, end, [0, 0, 0])], "lime")[0]
    assert len(set(lime.scores[start:end])) == 1 and lime.scores[start] != 0.0


# ----- 6. attention -----------------------------------------------------------------------------
def test_attention_last_matches_eager_attentions_and_restores_sdpa(tiny):
    ids, target = prompt(tiny)
    model = copy.deepcopy(tiny.model)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attn = model(input_ids=torch.tensor([ids]), output_attentions=True).attentions[-1][0]
    expected = attn.mean(0)[-1]
    assert tiny.model.config._attn_implementation == "sdpa"
    res = Attributor(tiny).attribute([AttributionInput(ids, target, 2, len(ids))], "attention_last")[0]
    assert tiny.model.config._attn_implementation == "sdpa"
    assert res.scores[2:] == pytest.approx(expected[2:].tolist(), abs=1e-6)
    assert res.scores[:2] == [0.0, 0.0] and res.forward_passes == 1


def test_rollout_rows_sum_to_one_and_match_hand_computation(tokenizer):
    from conftest import make_model

    subject = wrap_model(make_model(len(tokenizer), layers=2, seed=3), tokenizer, name="two-layer", device="cpu")
    ids, target = prompt(subject)
    maps = attention_maps(subject, ids)
    assert len(maps) == 2
    # Every row of the rollout matrix (all positions, before restricting to the span) sums to 1.
    assert rollout(maps).sum(-1) == pytest.approx(torch.ones(len(ids)), abs=1e-5)
    # By hand: propagate the last position's one-hot row down through the layers, top first.
    n = len(ids)
    row = torch.zeros(n, dtype=torch.float64)
    row[-1] = 1.0
    for layer in reversed(maps):
        mixed = 0.5 * layer.double().mean(0) + 0.5 * torch.eye(n, dtype=torch.float64)
        row = row @ (mixed / mixed.sum(-1, keepdim=True))
    full = Attributor(subject).attribute([AttributionInput(ids, target)], "attention_rollout")[0]
    assert full.scores == pytest.approx(row.tolist(), abs=1e-6)
    assert sum(full.scores) == pytest.approx(1.0, abs=1e-5)
    part = Attributor(subject).attribute([AttributionInput(ids, target, 4, 9)], "attention_rollout")[0]
    assert part.scores[4:9] == pytest.approx(row[4:9].tolist(), abs=1e-6) and sum(part.scores[:4]) == 0.0


def test_eager_switch_is_undone_on_error(tiny):
    ids, target = prompt(tiny)

    def boom(*args):
        raise RuntimeError("boom")

    handle = tiny.model.model.layers[0].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            Attributor(tiny).attribute([AttributionInput(ids, target)], "attention_rollout")
    finally:
        handle.remove()
    assert tiny.model.config._attn_implementation == "sdpa"


def test_peft_wrapped_subject(tiny):
    from peft import LoraConfig, get_peft_model

    ids, target = prompt(tiny)
    inp = AttributionInput(ids, target, 2, len(ids) - 1)
    plain = {m: Attributor(tiny).attribute([inp], m, **FAST.get(m, {}))[0] for m in METHODS}
    lora = LoraConfig(r=2, lora_dropout=0.5, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft = get_peft_model(copy.deepcopy(tiny.model), lora)
    peft.train()  # the attributor must switch dropout off, and give the mode back
    subject = wrap_model(peft, tiny.tokenizer, name="tiny+lora", device="cpu")
    peft.train()
    for method in METHODS:  # LoRA's B starts at zero: same function, so same scores
        res = Attributor(subject).attribute([inp], method, **FAST.get(method, {}))[0]
        assert res.scores == pytest.approx(plain[method].scores, abs=1e-5), method
    assert peft.training and peft.get_base_model().config._attn_implementation == "sdpa"

    trained = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(
        r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False))
    subject = wrap_model(trained, tiny.tokenizer, name="tiny+random-lora", device="cpu")
    res = Attributor(subject).attribute([inp], "occlusion")[0]
    clean = logprob(subject, ids, target)
    pad = tiny.tokenizer.pad_token_id
    expected = [clean - logprob(subject, replaced(ids, [t], pad), target) for t in range(2, len(ids) - 1)]
    assert res.scores[2:-1] == pytest.approx(expected, abs=1e-5)
    assert res.scores[2:-1] != pytest.approx(plain["occlusion"].scores[2:-1], abs=1e-3)


# ----- 7. disk cache ------------------------------------------------------------------------
def test_disk_cache_hit_runs_no_forward(tiny, tmp_path):
    ids, target = prompt(tiny)
    inp = AttributionInput(ids, target, 1, len(ids))
    calls = []
    handle = tiny.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = Attributor(tiny, cache_dir=tmp_path).attribute([inp], "lime", n_samples=32)[0]
        assert not first.cached and calls
        calls.clear()
        again = Attributor(tiny, cache_dir=tmp_path).attribute([inp], "lime", n_samples=32)[0]
        assert again.cached and not calls
        assert again.scores == first.scores
        assert (again.forward_passes, again.seconds) == (first.forward_passes, first.seconds)
        other = Attributor(tiny, cache_dir=tmp_path).attribute([inp], "lime", n_samples=32, seed=1)[0]
        assert not other.cached and calls
    finally:
        handle.remove()
    key = cache_key("tiny", "lime", {**DEFAULT_PARAMS["lime"], "n_samples": 32,
                                     "baseline_token": tiny.tokenizer.pad_token_id}, inp)
    stored = json.loads((tmp_path / "attributions" / key[:2] / f"{key}.json").read_text())
    assert stored["scores"] == first.scores and stored["cached"] is False
    assert not list(tmp_path.rglob(".tmp-*"))


def test_progress_and_round_trip(tiny):
    ids, target = prompt(tiny)
    ticks = []
    inputs = [AttributionInput(ids, target), AttributionInput(ids[:-2], target, 1)]
    results = Attributor(tiny).attribute(inputs, "attention_last", progress=ticks.append)
    assert ticks == [1, 1] and [len(r.scores) for r in results] == [len(ids), len(ids) - 2]
    assert Attribution.from_dict(json.loads(json.dumps(results[0].to_dict()))) == results[0]


def test_split_rows_trades_recomputed_tokens_for_forward_calls():
    assert split_rows([0, 0, 10, 10], 20, overhead=0) == [(0, 2), (2, 4)]
    assert split_rows([0, 0, 10, 10], 20, overhead=100) == [(0, 4)]
    assert split_rows([3, 3, 3], 20, overhead=0) == [(0, 3)]


def test_mass():
    a = Attribution("occlusion", [0.0, 1.0, -3.0, 0.0], 5, {}, 1, 0.1)
    assert a.mass([2]) == 0.75 and a.mass([1, 2, 2]) == 1.0 and a.mass([]) == 0.0
    assert Attribution("occlusion", [0.0, 0.0], 5, {}, 1, 0.1).mass([0]) == 0.0


# ----- 8. determinism and bad input -----------------------------------------------------------
@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_same_seed_same_scores(tiny, method):
    ids, target = prompt(tiny)
    inp = AttributionInput(ids, target)
    attributor = Attributor(tiny)
    torch.manual_seed(123)
    a = attributor.attribute([inp], method, n_samples=48, seed=5)[0]
    torch.rand(7)  # the global RNG state must not matter
    b = attributor.attribute([inp], method, n_samples=48, seed=5)[0]
    c = attributor.attribute([inp], method, n_samples=48, seed=6)[0]
    assert a.scores == b.scores and a.scores != c.scores


def test_bad_input_raises_documented_errors(tiny):
    ids, target = prompt(tiny)
    attributor = Attributor(tiny)
    with pytest.raises(ConfigError, match="occlusion.*kernel_shap"):
        attributor.attribute([AttributionInput(ids, target)], "shapley")
    with pytest.raises(ConfigError, match="n_steps"):
        attributor.attribute([AttributionInput(ids, target)], "occlusion", n_steps=3)
    with pytest.raises(ConfigError, match="n_samples"):
        attributor.attribute([AttributionInput(ids, target)], "lime", n_samples=0)
    bad = [AttributionInput(ids, target, 4, 4), AttributionInput(ids, target, -1),
           AttributionInput(ids, target, 0, len(ids) + 1), AttributionInput(ids, target, 2, 5, [0, 1]),
           AttributionInput(ids, len(tiny.tokenizer) + 50), AttributionInput(ids, -1), AttributionInput([], 0)]
    for inp in bad:
        with pytest.raises(DataError) as info:
            attributor.attribute([AttributionInput(ids, target), inp], "occlusion")
        assert "\n" not in str(info.value)
