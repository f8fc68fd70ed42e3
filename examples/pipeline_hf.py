"""A transformers Llama in pipeline stages on meshes of different sizes, each stage tensor
parallel over its own mesh, run by `torch.distributed.pipelining`'s schedules with meshcast
boundaries; its gradients checked against one process running the whole model.

The model is built from a config with random weights, the same on every rank (seeded), and cut
into stages: the embedding and the first layers; middle layers; the last layers, the final norm
and the LM head. Stage `s` runs on its own ranks (`--stage-tp 4,2,2`: ranks 0-3, 4-5, 6-7) and
is parallelized there with torch's `parallelize_module`: attention and MLP projections column
and row parallel, the embedding row parallel over the vocabulary, the head column parallel. A
stage's boundary tensor is the hidden state of a micro-batch, a DTensor replicated over the
stage's mesh; `MeshStage` moves it to the next stage's mesh and its gradient back, with meshcast
plans. Each schedule (`gpipe` and `1f1b` are torch's own classes, `eager-1f1b` is meshcast's)
trains `--steps` SGD steps from the same start.

Checked: after every step, each parameter's gradient (gathered with `full_tensor()`) and the
loss match one process running the unsplit transformers model on the whole batch with the same
optimizer, and the schedules' gradients and losses are bit-identical to each other.

Tolerance: both sides compute in fp32, but the pipeline adds partial sums in other orders (the
row-parallel all-reduces, the micro-batches' gradients summed and divided by their count
instead of one mean over the batch), so they agree to rounding, not bit for bit:
`max |g - g_ref| <= 1e-4 * max |g_ref|` per parameter (fp32 epsilon is 1.2e-7; a few layers of
hidden-size dot products stay well inside it, a wrong slice or a lost micro-batch does not),
and the loss within 1e-5 (a mean of cross entropies of order log(vocab)).

    python -m examples.pipeline_hf --stage-tp 4,2,2 --json
    python -m examples.pipeline_hf --stage-tp 2,4,1,1 --layers 8 --schedule eager-1f1b
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe
from torch.distributed.pipelining.schedules import PipelineScheduleSingle
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from meshcast.executor.local_world import LocalWorld
from meshcast.executor.pipeline_schedules import ScheduleEager1F1B
from meshcast.executor.pipeline_stage import MeshStage, StageTensor

#: per-parameter gradient tolerance, relative to the reference's largest (module docstring)
GRAD_RTOL = 1e-4
LOSS_ATOL = 1e-5
#: boundary placements `--boundary` takes
BOUNDARY_PLACEMENTS: dict[str, Placement] = {"R": Replicate(), "S(1)": Shard(1)}
#: torch's schedule classes and meshcast's, by the names `pipeline.schedules` uses
SCHEDULE_CLASSES: dict[str, type[PipelineScheduleSingle]] = {
    "gpipe": ScheduleGPipe,
    "1f1b": Schedule1F1B,
    "eager-1f1b": ScheduleEager1F1B,
}


@dataclass(frozen=True)
class Options:
    """The model, the stages and the data, as the command line gives them."""

    stage_tp: tuple[int, ...] = (4, 2, 2)
    layers: int = 6
    #: layers per stage (empty: an even split), to balance stages of unequal speed
    split: tuple[int, ...] = ()
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 128
    vocab: int = 128
    batch: int = 8
    sequence: int = 16
    microbatches: int = 4
    schedules: tuple[str, ...] = ("gpipe", "1f1b", "eager-1f1b")
    steps: int = 2
    lr: float = 0.1
    seed: int = 0
    #: the boundary tensors' placement on every stage's mesh: replicated, or sequence-sharded
    boundary: str = "R"
    #: the link figures of the boundary requests' cluster
    cluster: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Options:
        tuples = {k: tuple(data[k]) for k in ("stage_tp", "split", "schedules")}
        return cls(**{**data, **tuples})

    @property
    def num_stages(self) -> int:
        return len(self.stage_tp)

    @property
    def world_size(self) -> int:
        return sum(self.stage_tp)

    def stage_ranks(self, stage: int) -> list[int]:
        first = sum(self.stage_tp[:stage])
        return list(range(first, first + self.stage_tp[stage]))

    def stage_of(self, rank: int) -> int:
        return next(s for s in range(self.num_stages) if rank in self.stage_ranks(s))

    def layer_counts(self) -> tuple[int, ...]:
        """Layers per stage: `split`, or as even a split as there is, earlier stages one more."""
        if self.split:
            return self.split
        per, extra = divmod(self.layers, self.num_stages)
        return tuple(per + (s < extra) for s in range(self.num_stages))

    def stage_layers(self, stage: int) -> range:
        """The layers of stage `stage`."""
        counts = self.layer_counts()
        first = sum(counts[:stage])
        return range(first, first + counts[stage])

    def check(self) -> None:
        """`ValueError` naming the option that cannot work."""
        if self.num_stages < 2:
            raise ValueError(f"--stage-tp: at least 2 stages, got {list(self.stage_tp)}")
        if self.layers < self.num_stages:
            raise ValueError(f"--layers: at least one per stage, got {self.layers}")
        if self.split and (
            len(self.split) != self.num_stages
            or sum(self.split) != self.layers
            or min(self.split) < 1
        ):
            raise ValueError(
                f"--split {','.join(map(str, self.split))}: expected {self.num_stages} counts "
                f"of at least 1 adding up to --layers {self.layers}"
            )
        for tp in self.stage_tp:
            for name, value in (
                ("heads", self.heads),
                ("kv-heads", self.kv_heads),
                ("intermediate", self.intermediate),
                ("vocab", self.vocab),
            ):
                if tp < 1 or value % tp:
                    raise ValueError(f"--{name} {value}: not divisible by stage TP degree {tp}")
        if self.microbatches < self.num_stages:  # torch's 1F1B refuses fewer
            raise ValueError(
                f"--microbatches {self.microbatches}: at least the {self.num_stages} stages"
            )
        if self.batch % self.microbatches:
            raise ValueError(
                f"--microbatches {self.microbatches}: does not divide --batch {self.batch}"
            )
        if self.boundary not in BOUNDARY_PLACEMENTS:
            raise ValueError(f"--boundary: expected one of {list(BOUNDARY_PLACEMENTS)}")
        if self.boundary == "S(1)" and any(self.sequence % tp for tp in self.stage_tp):
            raise ValueError(f"--sequence {self.sequence}: not divisible by every TP degree")
        unknown = [s for s in self.schedules if s not in SCHEDULE_CLASSES]
        if unknown:
            raise ValueError(f"--schedule: {unknown[0]!r} is not one of {list(SCHEDULE_CLASSES)}")


def build_model(opts: Options) -> torch.nn.Module:
    """The whole model with its random weights, the same on every rank (seeded); SDPA
    attention, causal without a mask."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(opts.seed)
    config = LlamaConfig(
        vocab_size=opts.vocab,
        hidden_size=opts.hidden,
        intermediate_size=opts.intermediate,
        num_hidden_layers=opts.layers,
        num_attention_heads=opts.heads,
        num_key_value_heads=opts.kv_heads,
        head_dim=opts.hidden // opts.heads,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def layer_plan() -> dict[str, ParallelStyle]:
    """torch TP of one decoder layer, Megatron style: local tensors in and out."""
    return {
        **{f"self_attn.{p}": ColwiseParallel() for p in ("q_proj", "k_proj", "v_proj")},
        "self_attn.o_proj": RowwiseParallel(),
        **{f"mlp.{p}": ColwiseParallel() for p in ("gate_proj", "up_proj")},
        "mlp.down_proj": RowwiseParallel(),
    }


class LlamaStage(torch.nn.Module):
    """Stage `stage` of the model: the embedding (first), its layers, the norm and the head
    (last). It takes token ids (first) or the hidden state as a DTensor on `mesh`, computes on
    local tensors, and returns the hidden state as a DTensor on `mesh` laid out as `boundary`
    (logits on the last stage). Parameters keep the whole model's names under `model.`."""

    def __init__(self, model: torch.nn.Module, opts: Options, stage: int, mesh: DeviceMesh):
        super().__init__()
        self.mesh, self.first, self.last = mesh, stage == 0, stage == opts.num_stages - 1
        self.boundary = BOUNDARY_PLACEMENTS[opts.boundary]
        inner = model.model
        self.rotary = inner.rotary_emb  # RoPE tables: buffers, no weights
        self.embed_tokens = inner.embed_tokens if self.first else None
        self.layers = torch.nn.ModuleDict(
            {str(i): inner.layers[i] for i in opts.stage_layers(stage)}
        )
        self.norm = inner.norm if self.last else None
        self.lm_head = model.lm_head if self.last else None

    def full_name(self, name: str) -> str:
        """The name of parameter `name` in the whole model."""
        return name if name.startswith("lm_head.") else f"model.{name}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed_tokens is not None:
            h = self.embed_tokens(x)
        else:
            # a DTensor from `MeshStage` (an all-gather for S(1)); a plain tensor from torch's
            # own `PipelineStage`, which sends every rank's replicated copy
            h = x.redistribute(self.mesh, [Replicate()]).to_local() if isinstance(x, DTensor) else x
        positions = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
        rope = self.rotary(h, positions)
        for layer in self.layers.values():
            h = layer(h, position_ids=positions, position_embeddings=rope)
        if self.norm is not None and self.lm_head is not None:
            return self.lm_head(self.norm(h))
        whole = DTensor.from_local(h, self.mesh, [Replicate()], run_check=False)
        return whole.redistribute(self.mesh, [self.boundary])  # S(1): a local slice


def parallelize_stage(stage: LlamaStage, mesh: DeviceMesh) -> LlamaStage:
    """The stage tensor parallel over `mesh` (its own ranks)."""
    for layer in stage.layers.values():
        parallelize_module(layer, mesh, layer_plan())
    if stage.embed_tokens is not None:
        parallelize_module(
            stage.embed_tokens,
            mesh,
            RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
        )
    if stage.lm_head is not None:
        parallelize_module(stage.lm_head, mesh, ColwiseParallel(output_layouts=Replicate()))
    return stage


def stage_meshes(opts: Options) -> list[DeviceMesh]:
    """Every stage's 1-D mesh (a collective: every rank makes every mesh)."""
    return [DeviceMesh("cpu", torch.tensor(opts.stage_ranks(s))) for s in range(opts.num_stages)]


def boundary_layout(opts: Options) -> StageTensor:
    """One micro-batch's hidden state on a stage's 1-D mesh, laid out as `opts.boundary`."""
    rows = opts.batch // opts.microbatches
    placement = BOUNDARY_PLACEMENTS[opts.boundary]
    return StageTensor((rows, opts.sequence, opts.hidden), torch.float32, (placement,))


def mesh_stage(opts: Options, stage: int, mesh: DeviceMesh, module: torch.nn.Module) -> MeshStage:
    """Stage `stage`'s `MeshStage` (a collective): the hidden state in and out of it."""
    layout = boundary_layout(opts)
    return MeshStage(
        module,
        stage,
        opts.num_stages,
        mesh,
        inputs=[layout] if stage > 0 else [],
        outputs=[layout] if stage < opts.num_stages - 1 else [],
        cluster=opts.cluster or None,
    )


def data(opts: Options) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's token ids and next-token targets (seeded)."""
    tokens = torch.randint(
        0, opts.vocab, (opts.batch, opts.sequence + 1), generator=torch.Generator().manual_seed(1)
    )
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def run_step(
    schedule: PipelineScheduleSingle,
    opts: Options,
    stage: int,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    losses: list[torch.Tensor],
) -> None:
    """One schedule step on stage `stage`'s ranks: the first stage gets the tokens, the last
    the targets (and the micro-batches' losses land in `losses`)."""
    if stage == 0:
        schedule.step(tokens)
    elif stage == opts.num_stages - 1:
        schedule.step(target=targets, losses=losses)
    else:
        schedule.step()


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy of one micro-batch."""
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def _gradients(module: LlamaStage) -> dict[str, torch.Tensor]:
    """Every parameter's gradient, whole (a collective over the stage's mesh)."""
    out = {}
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        out[module.full_name(name)] = grad.detach().clone()
    return out


def reference(opts: Options) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """Per step, the loss and every gradient of one process running the whole model on the
    whole batch with the same optimizer."""
    model = build_model(opts)
    optimizer = torch.optim.SGD(model.parameters(), lr=opts.lr)
    tokens, targets = data(opts)
    out = []
    for _ in range(opts.steps):
        loss = loss_fn(model(input_ids=tokens).logits, targets)
        loss.backward()
        out.append(
            (
                float(loss.detach()),
                {n: p.grad.detach().clone() for n, p in model.named_parameters()},
            )
        )
        optimizer.step()
        optimizer.zero_grad()
    return out


def pipeline_job(opts_json: dict[str, Any]) -> dict[str, Any]:
    """One rank's part: its stage of the model on its mesh, each schedule trained from the same
    start, compared on the stage's first rank with the single-process reference."""
    opts = Options.from_json(opts_json)
    logging.getLogger("torch.distributed.pipelining").setLevel(logging.ERROR)
    rank = dist.get_rank()
    stage = opts.stage_of(rank)
    meshes = stage_meshes(opts)
    mesh = meshes[stage]
    module = parallelize_stage(LlamaStage(build_model(opts), opts, stage, mesh), mesh)
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    pipe = mesh_stage(opts, stage, mesh, module)
    tokens, targets = data(opts)
    checker = rank == opts.stage_ranks(stage)[0]
    expected = reference(opts) if checker else []
    report: dict[str, Any] = {"stage": stage, "grad_max_rel_err": 0.0, "loss_abs_err": 0.0}
    runs: dict[str, list[Any]] = {}
    for name in opts.schedules:
        with torch.no_grad():
            for n, p in module.named_parameters():
                p.copy_(start[n])
        optimizer = torch.optim.SGD(module.parameters(), lr=opts.lr)
        schedule = SCHEDULE_CLASSES[name](pipe, opts.microbatches, loss_fn=loss_fn)
        steps = []
        for step in range(opts.steps):
            losses: list[torch.Tensor] = []
            run_step(schedule, opts, stage, tokens, targets, losses)
            grads = _gradients(module)
            loss = float(torch.stack(losses).detach().mean()) if losses else None
            steps.append((loss, grads))
            if checker:
                want_loss, want = expected[step]
                for n, g in grads.items():
                    scale = want[n].abs().max().item() or 1.0
                    err = (g - want[n]).abs().max().item() / scale
                    report["grad_max_rel_err"] = max(report["grad_max_rel_err"], err)
                if loss is not None:
                    report["loss_abs_err"] = max(report["loss_abs_err"], abs(loss - want_loss))
            optimizer.step()
            optimizer.zero_grad()
        runs[name] = steps
    first = runs[opts.schedules[0]]
    report["schedules_identical"] = all(
        all(
            a[0] == b[0] and all(torch.equal(a[1][n], b[1][n]) for n in a[1])
            for a, b in zip(first, runs[name], strict=True)
        )
        for name in opts.schedules[1:]
    )
    report["losses"] = {name: [s[0] for s in steps] for name, steps in runs.items()}
    pipe.close()
    return report


def run(opts: Options, world: LocalWorld | None = None) -> dict[str, Any]:
    """Run the pipeline on `opts.world_size` gloo ranks (a local world of its own unless
    given); the JSON line's figures over every rank."""
    opts.check()
    own = world is None
    world = world or LocalWorld(opts.world_size, timeout_s=300)
    try:
        answers = world.run(pipeline_job, asdict(opts))[: opts.world_size]
    finally:
        if own:
            world.close()
    grad_err = max(a["grad_max_rel_err"] for a in answers)
    loss_err = max(a["loss_abs_err"] for a in answers)
    identical = all(a["schedules_identical"] for a in answers)
    last = answers[opts.stage_ranks(opts.num_stages - 1)[0]]
    return {
        "ok": grad_err <= GRAD_RTOL and loss_err <= LOSS_ATOL and identical,
        "grad_max_rel_err": grad_err,
        "loss_abs_err": loss_err,
        "schedules_identical": identical,
        "losses": last["losses"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Options()
    parser.add_argument(
        "--stage-tp",
        default=",".join(map(str, defaults.stage_tp)),
        help="each stage's tensor-parallel degree, which is its number of ranks",
    )
    for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    for name in ("batch", "sequence", "microbatches", "steps", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    parser.add_argument("--split", default="", help="layers per stage, such as 1,3,2")
    parser.add_argument(
        "--boundary",
        choices=list(BOUNDARY_PLACEMENTS),
        default=defaults.boundary,
        help="the hidden state's placement at stage boundaries: replicated or sequence-sharded",
    )
    parser.add_argument(
        "--schedule",
        default="all",
        help=f"one of {', '.join(SCHEDULE_CLASSES)}, or all (default) to compare them",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = vars(parser.parse_args(argv))
    as_json, schedule = args.pop("json"), args.pop("schedule")
    try:
        stage_tp = tuple(int(v) for v in args.pop("stage_tp").split(","))
        split = tuple(int(v) for v in args.pop("split").split(",") if v)
    except ValueError:
        parser.error("--stage-tp and --split: expected comma-separated integers, such as 4,2,2")
    schedules = tuple(SCHEDULE_CLASSES) if schedule == "all" else (schedule,)
    opts = Options(stage_tp=stage_tp, split=split, schedules=schedules, **args)
    try:
        opts.check()
    except ValueError as err:
        parser.error(str(err))
    print(
        f"Llama ({opts.layers} layers, hidden {opts.hidden}, {opts.heads} heads, vocab "
        f"{opts.vocab}) in {opts.num_stages} stages of TP {', '.join(map(str, stage_tp))} on "
        f"{opts.world_size} gloo ranks; {opts.microbatches} micro-batches of "
        f"{opts.batch // opts.microbatches}x{opts.sequence} tokens; {', '.join(schedules)}",
        file=sys.stderr,
    )
    result = run(opts)
    print(
        f"gradients within {result['grad_max_rel_err']:.2e} of one process (relative), loss "
        f"within {result['loss_abs_err']:.2e}; schedules bit-identical "
        f"{result['schedules_identical']}; losses {result['losses']}",
        file=sys.stderr,
    )
    if as_json:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in ("ok", "grad_max_rel_err", "loss_abs_err", "schedules_identical")
                }
            )
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
