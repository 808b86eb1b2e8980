"""Data-parallel LoRA training through accelerate: the same training loop in one process or many.

Launched with `accelerate launch --num_processes N ...` (or any torch.distributed launcher that
accelerate's `PartialState` understands), every process trains on its share of each global
batch (rows `rank::N`), the trainable gradients are summed across processes in one flat
all-reduce, and every process takes the same optimizer step, so all hold the same weights and the
loss trajectory is that of one process at the same global batch. In a single process every
method here is a no-op and training is bit-identical to the code without this module.

Why an explicit all-reduce and not `accelerator.prepare(model)` (DDP): the shared-prefix loss runs
two forwards (the prefix, then the rows) into one backward, which DDP's reducer does not support
without static-graph assumptions; and only the LoRA / projector gradients are reduced (megabytes),
so one all-reduce per step costs little. The subject is replicated in every process: this path
fits subjects whose bf16 weights fit one device (FSDP / DeepSpeed sharding is not wired in).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the training processes (rank 0 of 1 when not launched)."""

    rank: int = 0
    world: int = 1
    state: Any = None  # accelerate.PartialState when launched

    @classmethod
    def current(cls) -> "DataParallel":
        """The launcher's process group (via accelerate), or a single process."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        # On a machine without CUDA the processes talk over gloo (accelerate's MULTI_CPU).
        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes, state)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: Sequence[int]) -> list[int]:
        """This process's rows of a global batch (every process knows the whole batch)."""
        return list(rows[self.rank::self.world])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over processes (the tensor itself in one process)."""
        if self.world == 1:
            return tensor
        from accelerate.utils import reduce

        return reduce(tensor.clone(), reduction="sum")

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over processes (one flat all-reduce; a
        process with no rows in this step contributes zeros)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.sum(torch.cat([g.reshape(-1).float() for g in grads]))
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()
