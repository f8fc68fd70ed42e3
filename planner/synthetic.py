"""Synthetic requests of the kinds meshcast is judged on, for tests and benchmarks.

`random_request` draws 1-D to 3-D meshes, uneven tensor shapes, several tensors, single- or
multi-rail hosts, full or half duplex, and disjoint, overlapping or identical meshes. Requests
are plain JSON dicts, exactly what a launcher would send.
"""

from __future__ import annotations

import math
import random
from typing import Any

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
