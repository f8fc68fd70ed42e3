"""Eager-1F1B as a schedule `torch.distributed.pipelining` runs (DESIGN §6).

`ScheduleEager1F1B(stage, n_microbatches, loss_fn=...)` is used like torch's `Schedule1F1B`:
`schedule.step(x, target=y, losses=losses)` on every rank. Stage `i` of `n` runs
`min(B, 2(n - i) - 1)` forwards before its first backward, then one backward and one forward
in turn: the op list is `pipeline.schedules.stage_ops("eager-1f1b", ...)`, the same one the
simulator prices, so a measured iteration and its prediction describe one schedule.

It is a schedule class (`PipelineScheduleSingle`, one stage per rank, which is what a stage on
its own mesh is), not an action list for `_PipelineScheduleRuntime`: the runtime keys its
actions by rank in one pipeline process group and places its own send and receive actions
between them, which presumes that every stage has the same ranks in the same order. Here each
op waits for exactly its micro-batch's data and queues its send at once. Its stage may be a
`MeshStage` or torch's own `PipelineStage`; it calls the schedule base's private helpers, read
from the torch versions in `pipeline_stage.TORCH_VERSIONS`.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch.distributed.pipelining.schedules import (
    PipelineScheduleSingle,
    _batch_p2p,
    _wait_batch_p2p,
)

from meshcast.executor.pipeline_stage import check_torch_version
from meshcast.pipeline.schedules import stage_ops


class ScheduleEager1F1B(PipelineScheduleSingle):
    """Eager-1F1B for one stage per rank (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_torch_version()
        super().__init__(*args, **kwargs)

    def _step_microbatches(
        self,
        arg_mbs: list | None = None,
        kwarg_mbs: list | None = None,
        target_mbs: list | None = None,
        losses: list | None = None,
        return_outputs: bool = True,
        loss_kwargs: dict[str, Any] | None = None,
    ) -> None:
        arg_mbs, kwarg_mbs = self._check_inputs(arg_mbs, kwarg_mbs, target_mbs, losses)
        first_target = target_mbs[0] if target_mbs is not None else None
        self._initialize_stage(arg_mbs[0], kwarg_mbs[0], first_target, loss_kwargs)
        stage, count = self._stage, self._n_microbatches
        sends: list[list[dist.Work]] = []
        for op in stage_ops("eager-1f1b", self._num_stages, stage.stage_index, count):
            m = op.microbatch
            if op.kind == "F":
                _wait_batch_p2p(_batch_p2p(stage.get_fwd_recv_ops(m), desc="fwd_recv"))
                output = stage.forward_one_chunk(
                    m, arg_mbs[m], kwarg_mbs[m], save_forward_output=return_outputs
                )
                sends.append(_batch_p2p(stage.get_fwd_send_ops(m), desc="fwd_send"))
                self._maybe_compute_loss(stage, output, target_mbs, m, loss_kwargs)
            elif self._has_backward:
                _wait_batch_p2p(_batch_p2p(stage.get_bwd_recv_ops(m), desc="bwd_recv"))
                loss = self._maybe_get_loss(stage, m)
                stage.backward_one_chunk(m, loss=loss, last_backward=m == count - 1)
                sends.append(_batch_p2p(stage.get_bwd_send_ops(m), desc="bwd_send"))
        for work in sends:
            _wait_batch_p2p(work)
        self._update_losses(stage, losses)
        stage.perform_reduce_grad(count if self.scale_grads else 1)
