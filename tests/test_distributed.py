"""Data-parallel training through accelerate (2 CPU processes, gloo) equals one process at the same
global batch: same loss trajectory and the same adapter, within float32 summation-order noise."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfexplain.distributed import DataParallel
from selfexplain.records import Provenance, Record
from selfexplain.training import TrainConfig, train_explainer

accelerate = pytest.importorskip("accelerate")
HERE = Path(__file__).resolve().parent

# Float32 on both sides; the only difference is the order of the sums (per process, then across).
LOSS_TOLERANCE = 1e-5  # relative, per step
WEIGHT_TOLERANCE = 1e-5  # absolute, on every LoRA weight after training


def _records(n: int = 12) -> list[Record]:
    prov = Provenance("tiny", "test", {}, 0)
    out = []
    for i in range(n):
        changed = i % 3 == 0  # unbalanced labels: class weights differ per row
        answer = "changes to Paris" if changed else "unchanged from Rome"
        vec = torch.ones(32) * (1 if changed else -1)
        out.append(Record(f"r{i}", "t", "train", str(i), "Patch <<vector>> Answer :", answer, prov,
                          {"label": "changed" if changed else "unchanged"}, vec))
    return out


# 12 records in batches of 5 (the last batch has 2 rows); 3 epochs.
CONFIG = TrainConfig(learning_rate=1e-2, epochs=3, batch_size=5, lora_r=4, lora_alpha=8)


def _train(out: Path) -> list[float]:
    from conftest import make_model, make_tokenizer

    from selfexplain.models.loading import wrap_model

    tokenizer = make_tokenizer()
    tiny = wrap_model(make_model(len(tokenizer)), tokenizer, name="tiny", device="cpu")
    losses: list[float] = []
    train_explainer(tiny, _records(), CONFIG, out, vector_dim=32, progress=lambda s, n, loss: losses.append(loss))
    return losses


def _worker(out: str) -> None:
    """One launched process (what `accelerate launch` sets up): train, write its losses."""
    torch.set_num_threads(1)
    dp = DataParallel.current()
    losses = _train(Path(out) / "adapter")
    (Path(out) / f"losses{dp.rank}.json").write_text(json.dumps({"world": dp.world, "losses": losses}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, out: str, timeout: float = 300) -> None:
    """Start `world` fresh interpreters with the environment a torch.distributed launcher sets.
    Fresh processes, not fork: a child forked after the parent's OpenMP pool started can deadlock.
    A process that does not finish in time is killed, so a hang fails this test, never the run."""
    port = _free_port()
    code = f"import sys; sys.path[:0] = {[str(HERE), str(HERE.parent)]!r}; " \
           f"import test_distributed as t; t._worker({out!r})"
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo",
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    assert codes == [0] * world, "\n".join(o[-3000:] for o in outputs)


def _lora_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_single_process_is_a_no_op():
    dp = DataParallel.current()
    assert (dp.rank, dp.world, dp.is_main) == (0, 1, True)
    assert dp.shard([3, 1, 4]) == [3, 1, 4]
    t = torch.tensor([1.5])
    assert dp.sum(t) is t


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    single = _train(tmp_path / "single")
    launch(2, str(tmp_path / "dp"))
    ranks = [json.loads((tmp_path / "dp" / f"losses{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # every process sees the global loss
    multi = ranks[0]["losses"]
    assert len(multi) == len(single) == 9
    assert single[-1] < single[0]  # it trains
    for a, b in zip(single, multi):
        assert abs(a - b) <= LOSS_TOLERANCE * abs(a), (single, multi)
    one, two = _lora_weights(tmp_path / "single"), _lora_weights(tmp_path / "dp" / "adapter")
    assert one.keys() == two.keys()
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= WEIGHT_TOLERANCE
    assert not (tmp_path / "dp" / "adapter" / "checkpoint.pt").exists()
