import os

import pytest
import torch

from selfexplain.errors import TrainingError
from selfexplain.explainers.lora import copy_of
from selfexplain.models.generation import encode_query, greedy_generate
from selfexplain.records import Provenance, Record
from selfexplain.training import TrainConfig, train_explainer


def _records(n=16, dim=32):
    torch.manual_seed(0)
    prov = Provenance("tiny", "test", {}, 0)
    out = []
    for i in range(n):
        changed = i % 2 == 0
        answer = "changes to Paris" if changed else "unchanged from Rome"
        vec = torch.ones(dim) * (1 if changed else -1)  # the vector alone tells the answer
        out.append(Record(f"r{i}", "t", "train", str(i), "Patch <<vector>> Answer :",
                          answer, prov, {}, vec))
    return out


def test_training_learns_from_the_injected_vector(tiny, tmp_path):
    records = _records()
    cfg = TrainConfig(learning_rate=1e-2, epochs=50, batch_size=8, lora_r=8, lora_alpha=16)
    losses = []
    trained, projector = train_explainer(copy_of(tiny), records, cfg, tmp_path / "adapter", vector_dim=32,
                                         progress=lambda s, n, loss: losses.append(loss))
    assert losses[-1] < losses[0] / 4
    prompts = [encode_query(trained, r.query) for r in records[:4]]
    texts = greedy_generate(trained, prompts, [r.vector for r in records[:4]], projector, max_new_tokens=5)
    assert texts == [r.answer for r in records[:4]]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "selfexplain_training.json").is_file()


def test_training_learns_with_linears_stored_in_bf16(tiny, tmp_path, monkeypatch):
    """As load_model leaves a model on bf16 hardware: frozen linears bf16, adapters fp32."""
    from selfexplain.models import loading as models

    monkeypatch.setattr(models, "_CPU_BF16", True)
    monkeypatch.setenv("SELFEXPLAIN_FP32", "0")
    models.store_linears_in_bf16(tiny.model)
    records = _records()
    cfg = TrainConfig(learning_rate=1e-2, epochs=50, batch_size=8, lora_r=8, lora_alpha=16)
    losses = []
    trained, projector = train_explainer(tiny, records, cfg, tmp_path / "adapter", vector_dim=32,
                                         progress=lambda s, n, loss: losses.append(loss))
    assert losses[-1] < losses[0] / 4
    assert {p.dtype for p in trained.model.parameters() if p.requires_grad} == {torch.float32}
    prompts = [encode_query(trained, r.query) for r in records[:4]]
    texts = greedy_generate(trained, prompts, [r.vector for r in records[:4]], projector, max_new_tokens=5)
    assert texts == [r.answer for r in records[:4]]


def test_adapters_start_the_same_on_bf16_and_fp32_weights(tokenizer, tmp_path, monkeypatch):
    """PEFT would round the initial LoRA weights to the base dtype: bf16 storage must not."""
    from conftest import make_model
    from selfexplain.models import loading as models

    monkeypatch.setattr(models, "_CPU_BF16", True)
    monkeypatch.setenv("SELFEXPLAIN_FP32", "0")
    starts = {}
    for name in ("fp32", "bf16"):
        loaded = models.wrap_model(make_model(len(tokenizer)), tokenizer, name="tiny", device="cpu")
        if name == "bf16":
            models.store_linears_in_bf16(loaded.model)
        trained, _ = train_explainer(loaded, _records(8), TrainConfig(epochs=1e-9, learning_rate=1e-12),
                                     tmp_path / name, vector_dim=32)
        starts[name] = {n: p.detach().clone() for n, p in trained.model.named_parameters() if "lora_A" in n}
        base = trained.model.base_model.model.model.layers[0].mlp.up_proj.base_layer.weight
        assert base.dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
    assert starts["fp32"].keys() == starts["bf16"].keys()
    assert all(torch.equal(starts["fp32"][n], starts["bf16"][n]) for n in starts["fp32"])


def test_training_does_not_touch_the_subject(tiny, tmp_path):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    train_explainer(copy_of(tiny), _records(8), TrainConfig(epochs=1), tmp_path / "a", vector_dim=32)
    after = tiny.model.state_dict()
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)


def test_top_half_lora(tiny, tmp_path):
    trained, _ = train_explainer(copy_of(tiny), _records(8), TrainConfig(epochs=1, lora_layer_fraction=0.5),
                                 tmp_path / "a", vector_dim=32)
    names = [n for n, p in trained.model.named_parameters() if p.requires_grad]
    assert names and all(".layers.2." in n or ".layers.3." in n for n in names)


def test_nan_loss_is_an_error(tiny, tmp_path, monkeypatch):
    import selfexplain.training as training

    monkeypatch.setattr(training, "answer_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match="learning-rate"):
        train_explainer(copy_of(tiny), _records(8), TrainConfig(epochs=1), tmp_path / "a", vector_dim=32)


def test_interrupted_training_resumes_to_the_same_weights(tiny, tmp_path):
    """A crash after step 5 of 16 resumes from the checkpoint and ends bit-identical (weights,
    projector, losses) to uninterrupted training; the checkpoint is gone afterwards."""
    cfg = TrainConfig(learning_rate=1e-2, epochs=4, batch_size=2, lora_r=4, lora_alpha=8, lora_dropout=0.1)
    # a non-square projector and dropout: optimizer state and torch RNG both must be restored
    records = _records(8, dim=24)
    ref_losses: list[float] = []
    ref, ref_proj = train_explainer(copy_of(tiny), records, cfg, tmp_path / "ref", vector_dim=24,
                                    progress=lambda s, n, loss: ref_losses.append(loss))

    class Crash(Exception):
        pass

    def crash_at_5(step, total, loss):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_explainer(copy_of(tiny), records, cfg, tmp_path / "a", vector_dim=24, progress=crash_at_5)
    assert (tmp_path / "a" / "checkpoint.pt").is_file()
    seen: list[tuple[int, float]] = []
    resumed, proj = train_explainer(copy_of(tiny), records, cfg, tmp_path / "a", vector_dim=24,
                                    progress=lambda s, n, loss: seen.append((s, loss)))
    assert seen[0][0] == 5 and [loss for _, loss in seen[1:]] == ref_losses[5:]
    a = {n: p for n, p in ref.model.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.model.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(x, y) for x, y in zip(ref_proj.state_dict().values(), proj.state_dict().values()))
    assert not (tmp_path / "a" / "checkpoint.pt").exists()



def _ngrams(ids, n):
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


@pytest.mark.parametrize("n", [1, 2])
def test_no_repeat_ngram_bans_only_repeated_generated_ngrams(tiny, n):
    """Greedy decoding of this random model repeats itself; with no_repeat_ngram=n no generated
    n-gram repeats, and the answer is unchanged up to where the first repeat would have ended."""
    tok = tiny.tokenizer
    prompts = [encode_query(tiny, "Paris Paris Paris")]
    (free,) = greedy_generate(tiny, prompts, max_new_tokens=40, stop_at_newline=False)
    (constrained,) = greedy_generate(tiny, prompts, max_new_tokens=40, stop_at_newline=False, no_repeat_ngram=n)
    free_ids = tok(free, add_special_tokens=False)["input_ids"]
    ids = tok(constrained, add_special_tokens=False)["input_ids"]
    grams = _ngrams(free_ids, n)
    first_repeat = next(i for i in range(len(grams)) if grams[i] in grams[:i])  # it does repeat
    assert len(set(_ngrams(ids, n))) == len(_ngrams(ids, n)) and len(ids) == 40
    assert ids[:first_repeat + n - 1] == free_ids[:first_repeat + n - 1]
    assert ids[first_repeat + n - 1] != free_ids[first_repeat + n - 1]


@pytest.mark.parametrize("with_vectors", [False, True])
def test_shared_prefix_loss_and_gradients_equal_full_rows(tiny, with_vectors):
    """A batch's common prompt prefix runs once (KV cache repeated per row): the loss and every
    LoRA/projector gradient equal those of recomputing each full row."""
    from peft import LoraConfig, get_peft_model

    from selfexplain.models.loading import LoadedModel
    from selfexplain.training import MIN_SHARED_PREFIX, answer_loss, make_projector, shared_prefix_length

    torch.manual_seed(0)
    model = get_peft_model(copy_of(tiny).model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           init_lora_weights=False))  # non-zero B: real gradients
    loaded = LoadedModel(model, tiny.tokenizer, "tiny", "test", tiny.placeholder_id)
    stem = "What is the capital of France ? ( Paris , Rome , Berlin or unknown )"
    tails = ["Patch <<vector>> Answer :", "Patch L0 - 4 at France <<vector>> Answer :", "Answer :"]
    if not with_vectors:
        tails = [t.replace(" <<vector>>", "") for t in tails]
    prompts = [encode_query(loaded, f"{stem} {t}") for t in tails]
    answers = [encode_query(loaded, a, add_special_tokens=False) + [tiny.tokenizer.eos_token_id]
               for a in ("changes to Rome", "unchanged from Paris", "Berlin")]
    n_shared = shared_prefix_length(prompts, loaded.placeholder_id)
    common = os.path.commonprefix(prompts)
    assert n_shared == (common.index(loaded.placeholder_id) if loaded.placeholder_id in common else len(common))
    assert n_shared >= len(encode_query(loaded, stem)) >= MIN_SHARED_PREFIX
    vectors = torch.randn(2, 24) if with_vectors else None
    projector = make_projector(loaded, 24) if with_vectors else None
    weights = torch.tensor([1.0, 2.0, 0.5])
    results = []
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        if projector is not None:
            projector.zero_grad(set_to_none=True)
        loss = answer_loss(loaded, prompts, answers, vectors, projector, weights, share_prefix=share)
        loss.backward()
        params = [p for p in model.parameters() if p.requires_grad] + (list(projector.parameters()) if projector else [])
        results.append((loss.detach(), [p.grad.clone() for p in params]))
    (full_loss, full_grads), (shared_loss, shared_grads) = results
    assert torch.allclose(full_loss, shared_loss, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full_grads, shared_grads))
    assert any(g.abs().sum() > 0 for g in shared_grads)


def test_answer_loss_equals_each_rows_own_answer_cross_entropy(tiny):
    """The batched loss (left padding, kept positions only, answers of different lengths)
    equals the weighted mean over rows of each unpadded row's mean cross-entropy on its own
    answer tokens, computed from full logits."""
    from peft import LoraConfig, get_peft_model

    from selfexplain.models.loading import LoadedModel
    from selfexplain.training import answer_loss

    torch.manual_seed(0)
    model = get_peft_model(copy_of(tiny).model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           init_lora_weights=False))
    loaded = LoadedModel(model, tiny.tokenizer, "tiny", "test", tiny.placeholder_id)
    prompts = [encode_query(loaded, q) for q in ("What is the capital of France ? Answer :", "Rome ?",
                                                 "Patch L0 - 4 at France ( Paris , Rome ) Answer :")]
    answers = [encode_query(loaded, a, add_special_tokens=False) + [tiny.tokenizer.eos_token_id]
               for a in ("changes to Rome", "Berlin", "unchanged from Paris , Rome")]
    assert len({len(a) for a in answers}) == 3 and len({len(p) for p in prompts}) == 3
    weights = torch.tensor([1.0, 2.0, 0.5])
    model.train()
    batched = answer_loss(loaded, prompts, answers, None, None, weights)
    expected = []
    for p, a in zip(prompts, answers):
        logits = model(input_ids=torch.tensor([p + a])).logits[0].float()
        expected.append(torch.nn.functional.cross_entropy(logits[len(p) - 1:-1], torch.tensor(a)))
    reference = (torch.stack(expected) * weights).sum() / weights.sum()
    assert torch.allclose(batched, reference, atol=1e-5)
    assert not torch.allclose(batched, torch.stack(expected).mean(), atol=1e-4)  # the weights matter


def test_shared_prefix_stops_at_the_vector_and_keeps_each_last_prompt_token():
    from selfexplain.training import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 9, 4], [1, 2, 3, 9, 5]], stop_token=9) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]], stop_token=None) == 2
    assert shared_prefix_length([[5, 2], [1, 2]], stop_token=None) == 0


def test_training_batches_by_benchmark_and_length_repeated_per_benchmark():
    from selfexplain.training import training_batches, training_steps

    prov = Provenance("tiny", "test", {}, 0)
    queries = ["Q2 bb", "Q1 a", "Q2 aaaa", "Q1 b", "Q1 cccccc", "Q2 c"]
    records = [Record(f"p{i}", "patching", "train", str(i), q, "x", prov, {}, torch.ones(2))
               for i, q in enumerate(queries)]
    records += [Record(f"r{i}", "rationales", "train", str(i), q, "y", prov, {}) for i, q in enumerate(queries[:4])]
    cfg = TrainConfig(batch_size=3, epochs=2, benchmark_repeats={"rationales": 3})
    batches = training_batches(records, cfg)
    assert [[records[i].id for i in b] for b in batches] == (
        [["p1", "p3", "p5"], ["p0", "p2", "p4"]] + [["r1", "r3", "r0"], ["r2"]] * 3)
    assert training_steps(records, cfg) == 2 * len(batches) == 16


def test_adapter_fingerprint_covers_queries_answers_and_config():
    """A saved adapter is reused only for exactly the records it was trained on: a changed
    query (e.g. a new query template over the same ground truth) means retraining."""
    from selfexplain.training import fingerprint

    records, cfg = _records(4), TrainConfig()
    base = fingerprint(records, cfg)
    assert fingerprint(_records(4), cfg) == base
    records[1].query += " (reworded)"
    assert fingerprint(records, cfg) != base
    records = _records(4)
    records[2].answer = "changes to Rome"
    assert fingerprint(records, cfg) != base
    assert fingerprint(_records(4), TrainConfig(epochs=3)) != base
