import pytest
import torch

from selfexplain.errors import TrainingError
from selfexplain.explainers.lora import copy_of
from selfexplain.generation import encode_query, greedy_generate
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
