"""Synthetic requests of the kinds meshcast is judged on, for tests and benchmarks.

`random_request` draws 1-D to 3-D meshes, uneven tensor shapes, several tensors, single- or
multi-rail hosts, full or half duplex, and disjoint, overlapping or identical meshes. Requests
are plain JSON dicts, exactly what a launcher would send.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from typing import Any

from meshcast.planner.dtypes import ITEMSIZE_BYTES

DTYPES = ("float32", "bfloat16", "float16", "int8", "float64")


def _mesh_shape(rng: random.Random, num_devices: int, max_axes: int) -> list[int]:
    """A random factorisation of `num_devices` into 1 to `max_axes` axes."""
    shape = [num_devices]
    while len(shape) < max_axes and rng.random() < 0.6:
        divisors = [d for d in range(2, shape[-1]) if shape[-1] % d == 0]
        if not divisors:
            break
        d = rng.choice(divisors)
        shape[-1] //= d
        shape.append(d)
    rng.shuffle(shape)
    return shape


def _placements(rng: random.Random, num_axes: int, ndim: int) -> list[str]:
    return [rng.choice(["R"] + [f"S({k})" for k in range(ndim)]) for _ in range(num_axes)]


def random_request(rng: random.Random, max_hosts: int = 6, max_tensors: int = 3) -> dict[str, Any]:
    """One random but plausible `meshcast.request/v1`."""
    gpus_per_host = rng.choice([1, 2, 4, 8])
    nics_per_host = rng.choice([1, 1, gpus_per_host, max(1, gpus_per_host // 2)])
    num_hosts = rng.randint(2, max_hosts)
    hosts = [list(range(h * gpus_per_host, (h + 1) * gpus_per_host)) for h in range(num_hosts)]
    all_devices = [d for h in hosts for d in h]
    layout = rng.choice(["disjoint", "disjoint", "overlap", "same"])
    src_count = rng.choice([n for n in (1, 2, 4, 8, 16) if n <= len(all_devices) // 2] or [1])
    src_devices = all_devices[:src_count]
    if layout == "same":
        dst_devices = list(src_devices)
    else:
        start = src_count if layout == "disjoint" else src_count // 2
        room = len(all_devices) - start
        dst_count = rng.choice([n for n in (1, 2, 3, 4, 6, 8, 12, 16) if n <= room] or [1])
        dst_devices = all_devices[start : start + dst_count]
    if rng.random() < 0.3:
        rng.shuffle(dst_devices)
    meshes = {
        "src": {"shape": _mesh_shape(rng, len(src_devices), 3), "devices": src_devices},
        "dst": {"shape": _mesh_shape(rng, len(dst_devices), 3), "devices": dst_devices},
    }
    tensors = []
    for t in range(rng.randint(1, max_tensors)):
        ndim = rng.randint(1, 3)
        shape = [rng.choice([1, 3, 7, 16, 33, 64, 100, 128, 257]) for _ in range(ndim)]
        scale = max(1, int(2**22 // max(1, math.prod(shape))))
        shape[0] *= rng.randint(1, scale)
        tensors.append(
            {
                "name": f"t{t}",
                "shape": shape,
                "dtype": rng.choice(DTYPES),
                "src": {
                    "mesh": "src",
                    "placements": _placements(rng, len(meshes["src"]["shape"]), ndim),
                },
                "dst": {
                    "mesh": "dst",
                    "placements": _placements(rng, len(meshes["dst"]["shape"]), ndim),
                },
            }
        )
    return {
        "tensors": tensors,
        "meshes": meshes,
        "cluster": {
            "hosts": hosts,
            "nic_gbps": rng.choice([10, 100, 200, 400]),
            "nics_per_host": nics_per_host,
            "intra_gbps": rng.choice([800, 2400, 7200]),
            "latency_us": rng.choice([0, 5, 10]),
            "duplex": rng.choice(["full", "full", "half"]),
        },
    }


def random_multibox_request(
    rng: random.Random, max_hosts: int = 6, max_elements: int = 1 << 16
) -> dict[str, Any]:
    """`random_request` whose layouts hold several boxes per device: some placements become
    strided shards, some layouts random blocks (a device's blocks are disjoint; sources cover
    the tensor, replicas overlap). Tensors of at most about `max_elements` elements."""
    request = random_request(rng, max_hosts)
    for t in request["tensors"]:
        rest = math.prod(t["shape"][1:])
        t["shape"][0] = max(1, min(t["shape"][0], max_elements // rest))
    return with_multibox_layouts(request, rng)


def with_multibox_layouts(request: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """`request` (changed in place) with some sharded placements made strided (`_S(k,f)`) and
    some layouts made random blocks."""
    for t in request["tensors"]:
        for side in ("src", "dst"):
            layout = t[side]
            kind = rng.choice(["strided", "blocks", "keep"])
            if kind == "strided":
                layout["placements"] = [
                    p if p == "R" or rng.random() < 0.3 else f"_S({p[2:-1]},{rng.randint(1, 4)})"
                    for p in layout["placements"]
                ]
            elif kind == "blocks":
                count = len(request["meshes"][layout["mesh"]]["devices"])
                del layout["placements"]
                layout["blocks"] = _random_blocks(rng, t["shape"], count, side == "src")
    return request


def _random_blocks(
    rng: random.Random, shape: list[int], num_devices: int, cover: bool
) -> list[list[list[list[int]]]]:
    """The tensor cut in a random grid; each cell goes to one or two devices (to every cell
    when `cover`, else some cells to none)."""
    cuts = []
    for n in shape:
        inner = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(0, 3)))) if n > 1 else []
        cuts.append([0, *inner, n])
    blocks: list[list[list[list[int]]]] = [[] for _ in range(num_devices)]
    for cell in itertools.product(*(range(len(c) - 1) for c in cuts)):
        box = [[c[k], c[k + 1]] for c, k in zip(cuts, cell, strict=True)]
        owners = rng.sample(range(num_devices), min(num_devices, rng.choice([1, 1, 2])))
        if not cover and rng.random() < 0.2:
            owners = []
        for d in owners:
            blocks[d].append(box)
    for boxes in blocks:
        rng.shuffle(boxes)
    return blocks


def _cluster_request(
    rng: random.Random,
    gpus_per_host: int,
    src_hosts: int,
    dst_hosts: int,
    overlap: bool,
    cluster: dict[str, Any],
    tensors: list[tuple[list[int], str]],
) -> dict[str, Any]:
    """Whole-host meshes (as launchers place stages), random DTensor layouts per tensor."""
    num_hosts = src_hosts + (0 if overlap else dst_hosts)
    hosts = [list(range(h * gpus_per_host, (h + 1) * gpus_per_host)) for h in range(num_hosts)]
    src = [d for h in hosts[:src_hosts] for d in h]
    dst = [d for h in (hosts[:dst_hosts] if overlap else hosts[src_hosts:]) for d in h]
    meshes = {
        "src": {"shape": _mesh_shape(rng, len(src), 2), "devices": src},
        "dst": {"shape": _mesh_shape(rng, len(dst), 2), "devices": dst},
    }
    out = []
    for t, (shape, dtype) in enumerate(tensors):
        out.append(
            {
                "name": f"w{t}",
                "shape": shape,
                "dtype": dtype,
                "src": {
                    "mesh": "src",
                    "placements": _placements(rng, len(meshes["src"]["shape"]), len(shape)),
                },
                "dst": {
                    "mesh": "dst",
                    "placements": _placements(rng, len(meshes["dst"]["shape"]), len(shape)),
                },
            }
        )
    return {"tensors": out, "meshes": meshes, "cluster": {"hosts": hosts, **cluster}}


def shared_like_request(rng: random.Random, kind: str) -> dict[str, Any]:
    """A held-out request of one of the shared cases' kinds: "paper" (4 GPUs and one
    10 Gbit/s NIC per host, one large activation) or "modern" (8 GPUs and 8 x 400 Gbit/s rails
    per host, several bf16 tensors), with disjoint or overlapping meshes."""
    if kind == "paper":
        shape = [rng.choice([1024, 1536, 2048, 3072]), 1024, rng.choice([128, 170, 256, 512])]
        cluster = {
            "nic_gbps": 10,
            "nics_per_host": 1,
            "intra_gbps": 800,
            "latency_us": 10,
            "duplex": "full",
        }
        return _cluster_request(
            rng,
            4,
            rng.randint(1, 3),
            rng.randint(1, 3),
            rng.random() < 0.15,
            cluster,
            [(shape, "float32")],
        )
    if kind == "modern":
        hidden = rng.choice([4096, 8192])
        tensors = [
            (
                [rng.choice([hidden, 3 * hidden, 4 * hidden]), rng.choice([hidden, hidden // 2])],
                "bfloat16",
            )
            for _ in range(rng.randint(1, 6))
        ]
        cluster = {
            "nic_gbps": 400,
            "nics_per_host": 8,
            "intra_gbps": 7200,
            "latency_us": 5,
            "duplex": rng.choice(["full", "full", "half"]),
        }
        return _cluster_request(
            rng, 8, rng.randint(1, 4), rng.randint(1, 3), rng.random() < 0.15, cluster, tensors
        )
    raise ValueError(f"unknown kind {kind!r}")


def transpose_request(num_devices: int, gpus_per_host: int = 8) -> dict[str, Any]:
    """`num_devices` GPUs, half a source and half a destination mesh of whole hosts, one bf16
    activation moved from S(0),S(1) to S(1),S(0), sized so every tile is 256 KiB: at 1024
    devices this is the shared case `scale-64x8-to-64x8`."""
    per_side = num_devices // 2
    per_host = min(gpus_per_host, per_side)
    if per_side < 1 or per_side % per_host:
        raise ValueError(f"{num_devices} devices do not fill hosts of {per_host}")
    rows = per_side // per_host
    hosts = [list(range(h * per_host, (h + 1) * per_host)) for h in range(2 * rows)]
    layout = {"shape": [rows, per_host]}
    scale = max(rows, gpus_per_host)  # tiles of 1024 x 128 elements (256 KiB) at any size
    return {
        "tensors": [
            {
                "name": "x",
                "shape": [1024 * scale, 128 * scale],
                "dtype": "bfloat16",
                "src": {"mesh": "src", "placements": ["S(0)", "S(1)"]},
                "dst": {"mesh": "dst", "placements": ["S(1)", "S(0)"]},
            }
        ],
        "meshes": {
            "src": {**layout, "devices": list(range(per_side))},
            "dst": {**layout, "devices": list(range(per_side, 2 * per_side))},
        },
        "cluster": {
            "hosts": hosts,
            "nic_gbps": 200,
            "nics_per_host": 1,
            "intra_gbps": 2400,
            "latency_us": 5,
            "duplex": "full",
        },
    }


def scaled_request(request: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """A copy of `request` whose tensors hold at most `max_bytes` in all: the largest dim of
    the largest tensor is halved (rounding up) until they fit. Layouts and cluster stay; a
    tensor with block layouts is halved only along a dim where its length and every block edge
    are even, so its blocks halve exactly."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes: must be positive, got {max_bytes}")
    scaled = copy.deepcopy(request)
    tensors = scaled["tensors"]

    def num_bytes(t: dict[str, Any]) -> int:
        return math.prod(t["shape"]) * ITEMSIZE_BYTES[t["dtype"]]

    while sum(num_bytes(t) for t in tensors) > max_bytes:
        fitting = [(t, a) for t in tensors if (a := _halvable_axis(t)) is not None]
        if not fitting:
            raise ValueError(
                f"max_bytes: {max_bytes} is too small: no tensor can be halved further "
                "(one element, or block edges that do not halve)"
            )
        largest, axis = max(fitting, key=lambda ta: num_bytes(ta[0]))
        largest["shape"][axis] = (largest["shape"][axis] + 1) // 2
        for side in ("src", "dst"):
            for boxes in largest[side].get("blocks", ()):
                for box in boxes:
                    box[axis] = [box[axis][0] // 2, box[axis][1] // 2]
    return scaled


def _halvable_axis(tensor: dict[str, Any]) -> int | None:
    """The longest dim of `tensor` that can be halved (None: none can)."""
    shape = tensor["shape"]
    blocks = [b for side in ("src", "dst") for bs in tensor[side].get("blocks", ()) for b in bs]
    axes = [
        a
        for a in range(len(shape))
        if shape[a] > 1
        and (
            not blocks
            or (
                shape[a] % 2 == 0
                and all(lo % 2 == hi % 2 == 0 for lo, hi in (b[a] for b in blocks))
            )
        )
    ]
    return max(axes, key=lambda a: shape[a], default=None)


def moe_refit_request(
    *,
    num_layers: int = 4,
    hidden: int = 1024,
    ffn: int = 1024,
    num_experts: int = 8,
    vocab: int = 32768,
    num_stages: int = 2,
    stage_tp: int = 2,
    num_engines: int = 2,
    engine_tp: int = 2,
    gpus_per_host: int = 2,
    colocated: bool = False,
) -> dict[str, Any]:
    """An RL weight refit of an MoE model in bf16: pipeline stages of `stage_tp` ranks each
    (attention column/row parallel, experts split across the stage's ranks) to `num_engines`
    inference engines of `engine_tp` ranks (every engine a full replica, experts sharded along
    the FFN dim). `colocated` puts the engines on the training devices, as colocated RL
    frameworks do; otherwise they have hosts of their own."""
    num_train = num_stages * stage_tp
    num_infer = num_engines * engine_tp
    if colocated and num_infer != num_train:
        raise ValueError(f"colocated: {num_infer} engine ranks on {num_train} training ranks")
    meshes: dict[str, Any] = {
        f"stage{s}": {"shape": [stage_tp], "devices": list(range(s * stage_tp, (s + 1) * stage_tp))}
        for s in range(num_stages)
    }
    first_infer = 0 if colocated else num_train
    meshes["engines"] = {
        "shape": [num_engines, engine_tp],
        "devices": list(range(first_infer, first_infer + num_infer)),
    }
    num_devices = first_infer + num_infer
    tensors: list[dict[str, Any]] = []

    def add(name: str, shape: list[int], stage: int, train: str, infer: list[str]) -> None:
        tensors.append(
            {
                "name": name,
                "shape": shape,
                "dtype": "bfloat16",
                "src": {"mesh": f"stage{stage}", "placements": [train]},
                "dst": {"mesh": "engines", "placements": ["R", *infer]},
            }
        )

    add("embed", [vocab, hidden], 0, "S(0)", ["S(0)"])
    for layer in range(num_layers):
        stage = layer * num_stages // num_layers
        prefix = f"layers.{layer}"
        add(f"{prefix}.norm", [hidden], stage, "R", ["R"])
        add(f"{prefix}.qkv", [3 * hidden, hidden], stage, "S(0)", ["S(0)"])
        add(f"{prefix}.o", [hidden, hidden], stage, "S(1)", ["S(1)"])
        add(f"{prefix}.router", [num_experts, hidden], stage, "R", ["R"])
        add(f"{prefix}.experts.gate_up", [num_experts, 2 * ffn, hidden], stage, "S(0)", ["S(1)"])
        add(f"{prefix}.experts.down", [num_experts, hidden, ffn], stage, "S(0)", ["S(2)"])
    add("lm_head", [vocab, hidden], num_stages - 1, "S(0)", ["S(0)"])
    return {
        "tensors": tensors,
        "meshes": meshes,
        "cluster": {
            "hosts": [
                list(range(h, min(h + gpus_per_host, num_devices)))
                for h in range(0, num_devices, gpus_per_host)
            ],
            "nic_gbps": 100,
            "nics_per_host": 1,
            "intra_gbps": 1600,
            "latency_us": 5,
            "duplex": "full",
        },
    }
