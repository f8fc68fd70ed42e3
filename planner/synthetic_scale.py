"""Requests at the size users plan: MoE refits named as checkpoints name them and pipeline
boundaries of thousands of hosts, on 8-GPU hosts with 8 NIC rails. For scaling benchmarks.

`moe_refit_at_scale` moves an MoE model's weights from `num_stages` pipeline stages (each a
`[stage_dp, tp]` mesh of whole hosts) to `num_engines` inference engines (an `[num_engines, tp]`
mesh): attention column/row parallel, experts split over the tensor-parallel axis (expert
parallel), either one tensor per expert matrix (`per_expert`, each on a sub-mesh of the ranks
holding that expert) or stacked per layer. `boundary_request` is one activation crossing a
pipeline boundary between two `[hosts, 8]` stages.
"""

from __future__ import annotations

from typing import Any

MODERN_CLUSTER = {
    "nic_gbps": 400,
    "nics_per_host": 8,
    "intra_gbps": 3600,
    "latency_us": 5,
    "duplex": "full",
}


def _tensor(
    name: str, shape: list[int], src: tuple[str, list[str]], dst: tuple[str, list[str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "shape": shape,
        "dtype": "bfloat16",
        "src": {"mesh": src[0], "placements": src[1]},
        "dst": {"mesh": dst[0], "placements": dst[1]},
    }


def moe_refit_at_scale(
    *,
    num_layers: int,
    hidden: int,
    q_dim: int,
    kv_dim: int,
    ffn: int,
    num_experts: int,
    vocab: int,
    num_stages: int,
    stage_dp: int,
    num_engines: int,
    tp: int = 8,
    per_expert: bool = True,
) -> dict[str, Any]:
    """A refit request (see the module docstring); hosts hold `tp` GPUs."""
    if num_experts % tp:
        raise ValueError(f"num_experts: {num_experts} is not a multiple of tp {tp}")
    stage_size = stage_dp * tp
    meshes: dict[str, Any] = {}
    for s in range(num_stages):
        devices = list(range(s * stage_size, (s + 1) * stage_size))
        meshes[f"train{s}"] = {"shape": [stage_dp, tp], "devices": devices}
    first_infer = num_stages * stage_size
    infer_devices = list(range(first_infer, first_infer + num_engines * tp))
    meshes["infer"] = {"shape": [num_engines, tp], "devices": infer_devices}
    if per_expert:
        for r in range(tp):
            for s in range(num_stages):
                meshes[f"train{s}.ep{r}"] = {
                    "shape": [stage_dp],
                    "devices": meshes[f"train{s}"]["devices"][r::tp],
                }
            meshes[f"infer.ep{r}"] = {"shape": [num_engines], "devices": infer_devices[r::tp]}
    infer_col = ("infer", ["R", "S(0)"])
    tensors = [_tensor("embed", [vocab, hidden], ("train0", ["R", "S(0)"]), infer_col)]
    per_rank = num_experts // tp
    for layer in range(num_layers):
        train = f"train{layer * num_stages // num_layers}"
        prefix = f"layers.{layer}"
        for name, shape, placement in (
            ("ln1", [hidden], "R"),
            ("ln2", [hidden], "R"),
            ("q", [q_dim, hidden], "S(0)"),
            ("k", [kv_dim, hidden], "S(0)"),
            ("v", [kv_dim, hidden], "S(0)"),
            ("o", [hidden, q_dim], "S(1)"),
            ("router", [num_experts, hidden], "R"),
        ):
            tensors.append(
                _tensor(
                    f"{prefix}.{name}",
                    shape,
                    (train, ["R", placement]),
                    ("infer", ["R", placement]),
                )
            )
        if not per_expert:
            for name, shape in (
                ("gate_up", [num_experts, 2 * ffn, hidden]),
                ("down", [num_experts, hidden, ffn]),
            ):
                tensors.append(
                    _tensor(
                        f"{prefix}.experts.{name}",
                        shape,
                        (train, ["R", "S(0)"]),
                        ("infer", ["R", "S(0)"]),
                    )
                )
            continue
        for name, shape in (("gate_up", [2 * ffn, hidden]), ("down", [hidden, ffn])):
            for e in range(num_experts):
                rank = e // per_rank
                tensors.append(
                    _tensor(
                        f"{prefix}.experts.{e}.{name}",
                        shape,
                        (f"{train}.ep{rank}", ["R"]),
                        (f"infer.ep{rank}", ["R"]),
                    )
                )
    last = f"train{num_stages - 1}"
    tensors.append(_tensor("norm", [hidden], (last, ["R", "R"]), ("infer", ["R", "R"])))
    tensors.append(_tensor("lm_head", [vocab, hidden], (last, ["R", "S(0)"]), infer_col))
    num_devices = first_infer + num_engines * tp
    hosts = [list(range(h, h + tp)) for h in range(0, num_devices, tp)]
    return {"tensors": tensors, "meshes": meshes, "cluster": {"hosts": hosts, **MODERN_CLUSTER}}


def qwen3_235b_per_expert_refit(num_layers: int = 94) -> dict[str, Any]:
    """Qwen3-235B-A22B shapes, one tensor per expert matrix (263 per layer: 24,725 tensors for
    the model's 94 layers), 4 stages of 4x8 training GPUs to 8 engines of 8: 192 GPUs."""
    return moe_refit_at_scale(
        num_layers=num_layers,
        hidden=4096,
        q_dim=8192,
        kv_dim=512,
        ffn=1536,
        num_experts=128,
        vocab=151936,
        num_stages=min(4, num_layers),
        stage_dp=4,
        num_engines=8,
    )


def deepseek_v3_stacked_refit() -> dict[str, Any]:
    """DeepSeek-V3-sized shapes with stacked experts (61 layers, 256 experts), 8 stages of 4x8
    training GPUs to 16 engines of 8: 384 GPUs."""
    return moe_refit_at_scale(
        num_layers=61,
        hidden=7168,
        q_dim=16384,
        kv_dim=2048,
        ffn=2048,
        num_experts=256,
        vocab=129280,
        num_stages=8,
        stage_dp=4,
        num_engines=16,
        per_expert=False,
    )


def boundary_request(
    num_hosts_per_stage: int,
    batch: int = 2048,
    seq: int = 8192,
    hidden: int = 8192,
    dst_placements: tuple[str, str] = ("S(0)", "R"),
) -> dict[str, Any]:
    """One bf16 activation `[batch, seq, hidden]` from a `[hosts, 8]` stage sharded S(0),S(1)
    to the next stage's `[hosts, 8]` mesh (S(0),R: every GPU of a host gathers its rows)."""
    gpus = num_hosts_per_stage * 8
    hosts = [list(range(h * 8, h * 8 + 8)) for h in range(2 * num_hosts_per_stage)]
    return {
        "tensors": [
            _tensor(
                "hidden",
                [batch, seq, hidden],
                ("stage0", ["S(0)", "S(1)"]),
                ("stage1", list(dst_placements)),
            )
        ],
        "meshes": {
            "stage0": {"shape": [num_hosts_per_stage, 8], "devices": list(range(gpus))},
            "stage1": {"shape": [num_hosts_per_stage, 8], "devices": list(range(gpus, 2 * gpus))},
        },
        "cluster": {"hosts": hosts, **MODERN_CLUSTER},
    }
