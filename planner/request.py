"""`meshcast.request/v1`: parsing and validation (DESIGN §1).

The JSON shape is checked by pydantic models; the cross-references (meshes, hosts, placements)
are checked here with messages that name the field and the value. The result is a frozen
`Request` of plain values, canonical: `request_id` (the sha256 of its canonical JSON) is what
caches and fingerprints key on.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshcast.planner.boxes import covers, grid_cuts
from meshcast.planner.bulk import collection_paused
from meshcast.planner.dtypes import FLOAT_DTYPES, ITEMSIZE_BYTES
from meshcast.planner.errors import RequestError
from meshcast.planner.mesh import Box, Placement, Strided

MAX_TENSOR_BYTES = 1 << 50  # 1 PiB: anything larger is a unit mistake, not a tensor
#: longest tensor dim (elements)
MAX_DIM = 1 << 50
MAX_GBPS = 1e7
#: slowest link: 1 Mbit/s (slower is a unit mistake, and makes every time overflow)
MIN_GBPS = 1e-3
MAX_TIME_LIMIT_S = 3600.0
#: largest device id: a rank of a `torch.distributed` world (int32)
MAX_DEVICE_ID = (1 << 31) - 1
#: most NIC rails per host (device j of a host uses rail j % nics_per_host)
MAX_NICS_PER_HOST = 64
#: most blocks one layout may list (over all its devices)
MAX_BLOCKS = 1 << 16
#: most cells the edges of one layout's blocks may cut a tensor into
MAX_BLOCK_CELLS = 1 << 22
#: largest `_S(k,f)` split factor, and most (device, strided piece) pairs in one layout
MAX_SPLIT_FACTOR = 1 << 10
MAX_LAYOUT_PIECES = 1 << 20
_SHARD = re.compile(r"^S\((\d+)\)$")
_STRIDED = re.compile(r"^_S\((\d+),\s*(\d+)\)$")

NonNegInt = Annotated[int, Field(strict=True, ge=0)]
PosInt = Annotated[int, Field(strict=True, ge=1)]
DimInt = Annotated[int, Field(strict=True, ge=0, le=MAX_DIM)]
DeviceId = Annotated[int, Field(strict=True, ge=0, le=MAX_DEVICE_ID)]
AxisInt = Annotated[int, Field(strict=True, ge=1, le=MAX_DEVICE_ID)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Layout(_Model):
    mesh: str
    dtype: str | None = None
    placements: list[str] | None = None
    blocks: list[list[list[list[Annotated[int, Field(strict=True, ge=0, le=MAX_DIM)]]]]] | None = (
        None
    )


class _Tensor(_Model):
    name: str = Field(min_length=1)
    shape: list[DimInt]
    dtype: str
    src: _Layout
    dst: _Layout


class _Mesh(_Model):
    shape: list[AxisInt] = Field(min_length=1)
    devices: list[DeviceId] = Field(min_length=1)


class _Cluster(_Model):
    hosts: list[list[DeviceId]] = Field(min_length=1)
    nic_gbps: float = Field(ge=MIN_GBPS, le=MAX_GBPS, allow_inf_nan=False)
    nics_per_host: Annotated[int, Field(strict=True, ge=1, le=MAX_NICS_PER_HOST)] = 1
    intra_gbps: float | None = Field(default=None, ge=MIN_GBPS, le=MAX_GBPS, allow_inf_nan=False)
    latency_us: float = Field(default=0.0, ge=0, le=1e6, allow_inf_nan=False)
    duplex: Literal["full", "half"] = "full"


class _Options(_Model):
    algorithm: str = "auto"
    time_limit_s: float = Field(default=2.0, gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False)
    seed: Annotated[int, Field(strict=True, ge=-(1 << 63), le=(1 << 63) - 1)] = 0


class _Request(_Model):
    tensors: list[_Tensor] = Field(min_length=1)
    meshes: dict[str, _Mesh] = Field(min_length=1)
    cluster: _Cluster
    options: _Options = _Options()


@dataclass(frozen=True)
class Layout:
    """Where a tensor lives: a mesh name and one placement per mesh axis (None = replicate,
    k = shard tensor dim k, `Strided`), or `blocks`: the boxes of every mesh device, in the
    mesh's device order (then `placements` is empty)."""

    mesh: str
    placements: tuple[Placement, ...]
    blocks: tuple[tuple[Box, ...], ...] | None = None


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to reshard: global shape, dtype and its source and destination layouts."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    src: Layout
    dst: Layout
    #: the destination's own dtype (a refit into a narrower float), None: the same as `dtype`
    dst_dtype: str | None = None

    @property
    def wire_dtype(self) -> str:
        """The dtype that travels and lands: the destination's (the sender converts)."""
        return self.dst_dtype or self.dtype

    @property
    def itemsize_bytes(self) -> int:
        """Bytes per element on the wire and at the destination (plans, bounds, messages)."""
        return ITEMSIZE_BYTES[self.wire_dtype]


@dataclass(frozen=True)
class MeshSpec:
    """A device mesh: N-D shape and its devices listed row-major."""

    shape: tuple[int, ...]
    devices: tuple[int, ...]


@dataclass(frozen=True)
class ClusterSpec:
    """Hosts (device lists, position = rail index modulo `nics_per_host`) and link speeds."""

    hosts: tuple[tuple[int, ...], ...]
    nic_gbps: float
    nics_per_host: int
    intra_gbps: float
    latency_us: float
    duplex: str


@dataclass(frozen=True)
class Options:
    """Solver options carried by the request."""

    algorithm: str = "auto"
    time_limit_s: float = 2.0
    seed: int = 0


@dataclass(frozen=True)
class Request:
    """A validated `meshcast.request/v1`."""

    tensors: tuple[TensorSpec, ...]
    meshes: dict[str, MeshSpec]
    cluster: ClusterSpec
    options: Options

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form (defaults filled in, placements spelled out)."""
        return {
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "src": _layout_json(t.src),
                    "dst": _layout_json(t.dst, t.dst_dtype),
                }
                for t in self.tensors
            ],
            "meshes": {
                name: {"shape": list(m.shape), "devices": list(m.devices)}
                for name, m in sorted(self.meshes.items())
            },
            "cluster": {
                "hosts": [list(h) for h in self.cluster.hosts],
                "nic_gbps": self.cluster.nic_gbps,
                "nics_per_host": self.cluster.nics_per_host,
                "intra_gbps": self.cluster.intra_gbps,
                "latency_us": self.cluster.latency_us,
                "duplex": self.cluster.duplex,
            },
            "options": {
                "algorithm": self.options.algorithm,
                "time_limit_s": self.options.time_limit_s,
                "seed": self.options.seed,
            },
        }

    @cached_property
    def request_id(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace)."""
        with collection_paused():
            text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as one bytes object, unpickled with the cyclic collector paused, its id
        included: a request of 10^5 tensors unpickles in about 0.6 s instead of 1.4 s (as JSON
        parsed again: 2 s)."""
        fields = (self.tensors, self.meshes, self.cluster, self.options)
        with collection_paused():
            state = pickle.dumps((fields, self.__dict__.get("request_id")), pickle.HIGHEST_PROTOCOL)
        return _unpickled_request, (state,)


def _unpickled_request(state: bytes) -> Request:
    with collection_paused():
        fields, request_id = pickle.loads(state)
    request = Request(*fields)
    if request_id is not None:
        request.__dict__["request_id"] = request_id
    return request


def placement_text(p: Placement) -> str:
    """A placement in request spelling: `R`, `S(k)` or `_S(k,f)`."""
    if p is None:
        return "R"
    if isinstance(p, Strided):
        return f"_S({p.dim},{p.split_factor})"
    return f"S({p})"


def _layout_json(layout: Layout, dtype: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mesh": layout.mesh}
    if layout.blocks is not None:
        out["blocks"] = [[[list(iv) for iv in box] for box in boxes] for boxes in layout.blocks]
    else:
        out["placements"] = [placement_text(p) for p in layout.placements]
    if dtype is not None:  # only when it differs: requests without one keep their ids
        out["dtype"] = dtype
    return out


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "request"


def parse_request(data: Any) -> Request:
    """Validate a decoded JSON request; raise `RequestError` naming the first bad field."""
    with collection_paused():
        return _parse_request(data)


def _parse_request(data: Any) -> Request:
    if not isinstance(data, dict):
        raise RequestError("request", f"expected a JSON object, got {type(data).__name__}")
    try:
        raw = _Request.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        value = first.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        raise RequestError(_field_path(tuple(first["loc"])), f"{first['msg']}{shown}") from None
    meshes = {name: _check_mesh(name, m) for name, m in raw.meshes.items()}
    layouts: dict[tuple[object, ...], Layout] = {}
    tensors = tuple(_check_tensor(i, t, meshes, layouts) for i, t in enumerate(raw.tensors))
    first_index: dict[str, int] = {}
    for i, t in enumerate(tensors):
        if first_index.setdefault(t.name, i) != i:
            raise RequestError(f"tensors[{i}].name", f"duplicate tensor name {t.name!r}")
    cluster = _check_cluster(raw.cluster, meshes)
    options = Options(raw.options.algorithm, raw.options.time_limit_s, raw.options.seed)
    return Request(tensors, meshes, cluster, options)


def _check_mesh(name: str, mesh: _Mesh) -> MeshSpec:
    shape, devices = tuple(mesh.shape), tuple(mesh.devices)
    if math.prod(shape) != len(devices):
        raise RequestError(
            f"meshes.{name}.devices",
            f"mesh of shape {list(shape)} needs {math.prod(shape)} devices, got {len(devices)}",
        )
    seen: set[int] = set()
    for j, d in enumerate(devices):
        if d in seen:
            raise RequestError(f"meshes.{name}.devices[{j}]", f"device {d} is listed twice")
        seen.add(d)
    return MeshSpec(shape, devices)


def _check_tensor(
    i: int,
    t: _Tensor,
    meshes: dict[str, MeshSpec],
    layouts: dict[tuple[object, ...], Layout],
) -> TensorSpec:
    """One tensor checked; `layouts` remembers the layouts already checked (real models
    repeat a few of them over thousands of tensors)."""
    where = f"tensors[{i}]"
    if t.dtype not in ITEMSIZE_BYTES:
        raise RequestError(
            f"{where}.dtype", f"unknown dtype {t.dtype!r} (one of {', '.join(ITEMSIZE_BYTES)})"
        )
    shape = tuple(t.shape)
    nbytes = math.prod(shape) * ITEMSIZE_BYTES[t.dtype]
    if nbytes > MAX_TENSOR_BYTES:
        raise RequestError(f"{where}.shape", f"{list(shape)} is {nbytes} bytes, over 1 PiB")
    if t.src.dtype is not None:
        raise RequestError(
            f"{where}.src.dtype", f"the source's dtype is the tensor's ({t.dtype!r}): remove it"
        )
    return TensorSpec(
        t.name,
        shape,
        t.dtype,
        _known_layout(f"{where}.src", t.src, shape, meshes, layouts),
        _known_layout(f"{where}.dst", t.dst, shape, meshes, layouts),
        _destination_dtype(where, t),
    )


def _destination_dtype(where: str, t: _Tensor) -> str | None:
    """The destination's own dtype, when it names one that differs: a float into a float."""
    dtype = t.dst.dtype
    if dtype is None or dtype == t.dtype:
        return None
    if dtype not in ITEMSIZE_BYTES:
        raise RequestError(
            f"{where}.dst.dtype",
            f"unknown dtype {dtype!r} (one of {', '.join(ITEMSIZE_BYTES)})",
        )
    if t.dtype not in FLOAT_DTYPES or dtype not in FLOAT_DTYPES:
        raise RequestError(
            f"{where}.dst.dtype",
            f"{dtype!r} from a {t.dtype!r} source: only a float converts to another float "
            f"({', '.join(FLOAT_DTYPES)})",
        )
    return dtype


def _known_layout(
    where: str,
    layout: _Layout,
    shape: tuple[int, ...],
    meshes: dict[str, MeshSpec],
    layouts: dict[tuple[object, ...], Layout],
) -> Layout:
    if layout.blocks is not None:  # blocks depend on the shape and the side (coverage)
        return _check_blocks(where, layout, shape, meshes, where.endswith(".src"))
    key = (layout.mesh, tuple(layout.placements or ()), len(shape))
    if key not in layouts:
        layouts[key] = _check_layout(where, layout, len(shape), meshes)
    return layouts[key]


def _mesh_of(where: str, layout: _Layout, meshes: dict[str, MeshSpec]) -> MeshSpec:
    mesh = meshes.get(layout.mesh)
    if mesh is None:
        raise RequestError(
            f"{where}.mesh", f"unknown mesh {layout.mesh!r} (meshes: {', '.join(sorted(meshes))})"
        )
    return mesh


def _check_blocks(
    where: str,
    layout: _Layout,
    shape: tuple[int, ...],
    meshes: dict[str, MeshSpec],
    must_cover: bool,
) -> Layout:
    """Blocks: one list of boxes per mesh device, each inside the tensor; with `must_cover`
    (a source), together covering it."""
    mesh = _mesh_of(where, layout, meshes)
    assert layout.blocks is not None
    if layout.placements is not None:
        raise RequestError(f"{where}", "give either placements or blocks, not both")
    if len(layout.blocks) != len(mesh.devices):
        raise RequestError(
            f"{where}.blocks",
            f"{len(layout.blocks)} block lists for mesh {layout.mesh!r} "
            f"of {len(mesh.devices)} devices (one list per device)",
        )
    if sum(len(b) for b in layout.blocks) > MAX_BLOCKS:
        raise RequestError(f"{where}.blocks", f"more than {MAX_BLOCKS} blocks")
    blocks = tuple(
        tuple(_check_box(f"{where}.blocks[{j}][{k}]", box, shape) for k, box in enumerate(raw))
        for j, raw in enumerate(layout.blocks)
    )
    cuts = grid_cuts(shape, (((iv,) for iv in box) for held in blocks for box in held))
    cells = math.prod(len(c) - 1 for c in cuts)
    if cells > MAX_BLOCK_CELLS:
        raise RequestError(
            f"{where}.blocks",
            f"the blocks' edges cut the tensor into {cells:,} cells, over the limit of "
            f"{MAX_BLOCK_CELLS:,}",
        )
    if must_cover and all(shape):
        every = [b for boxes in blocks for b in boxes]
        if not covers(tuple((0, n) for n in shape), every):
            raise RequestError(
                f"{where}.blocks", f"source blocks do not cover the tensor of shape {list(shape)}"
            )
    return Layout(layout.mesh, (), blocks)


def _check_box(where: str, box: list[list[int]], shape: tuple[int, ...]) -> Box:
    if len(box) != len(shape):
        raise RequestError(where, f"box has {len(box)} intervals, tensor has {len(shape)} dims")
    out = []
    for d, (iv, n) in enumerate(zip(box, shape, strict=True)):
        if len(iv) != 2 or not 0 <= iv[0] <= iv[1] <= n:
            raise RequestError(
                f"{where}[{d}]", f"interval {iv} is not [lo, hi] with 0 <= lo <= hi <= {n}"
            )
        out.append((iv[0], iv[1]))
    return tuple(out)


def _check_layout(where: str, layout: _Layout, ndim: int, meshes: dict[str, MeshSpec]) -> Layout:
    mesh = _mesh_of(where, layout, meshes)
    if layout.placements is None:
        raise RequestError(f"{where}", "give placements (one per mesh axis) or blocks")
    if len(layout.placements) != len(mesh.shape):
        raise RequestError(
            f"{where}.placements",
            f"{len(layout.placements)} placements for mesh {layout.mesh!r} "
            f"with {len(mesh.shape)} axes",
        )
    placements = tuple(
        parse_placement(f"{where}.placements[{a}]", p, ndim)
        for a, p in enumerate(layout.placements)
    )
    # working out the intervals visits every device once per strided piece
    pieces = math.prod(p.split_factor for p in placements if isinstance(p, Strided))
    if len(mesh.devices) * pieces > MAX_LAYOUT_PIECES:
        raise RequestError(
            f"{where}.placements",
            f"split factors {pieces} over {len(mesh.devices)} devices make "
            f"{len(mesh.devices) * pieces:,} strided pieces, over the limit of "
            f"{MAX_LAYOUT_PIECES:,}",
        )
    return Layout(layout.mesh, placements)


def parse_placement(where: str, text: str, ndim: int) -> Placement:
    """'R' -> None, 'S(k)' -> k, '_S(k,f)' -> `Strided(k, f)`; partial and malformed
    placements are rejected."""
    p = text.strip()
    if p == "R":
        return None
    if p == "P" or p.startswith("P("):
        raise RequestError(where, f"partial placement {text!r} is not supported yet")
    match = _SHARD.match(p) or _STRIDED.match(p)
    if not match:
        raise RequestError(
            where, f"unsupported placement {text!r} (expected 'R', 'S(k)' or '_S(k,f)')"
        )
    dim = int(match.group(1))
    if dim >= ndim:
        raise RequestError(where, f"placement {text!r} names tensor dim {dim}, tensor has {ndim}")
    if match.re is _SHARD:
        return dim
    factor = int(match.group(2))
    if not 1 <= factor <= MAX_SPLIT_FACTOR:
        raise RequestError(
            where, f"split factor {factor} in {text!r} is not between 1 and {MAX_SPLIT_FACTOR}"
        )
    return Strided(dim, factor)


def _check_cluster(c: _Cluster, meshes: dict[str, MeshSpec]) -> ClusterSpec:
    host_of: dict[int, int] = {}
    for h, devices in enumerate(c.hosts):
        if not devices:
            raise RequestError(f"cluster.hosts[{h}]", "host has no devices")
        for j, d in enumerate(devices):
            if d in host_of:
                raise RequestError(
                    f"cluster.hosts[{h}][{j}]", f"device {d} is already on host {host_of[d]}"
                )
            host_of[d] = h
    for name, mesh in sorted(meshes.items()):
        for j, d in enumerate(mesh.devices):
            if d not in host_of:
                raise RequestError(f"meshes.{name}.devices[{j}]", f"device {d} is on no host")
    # the default NVLink speed, capped so that the canonical request parses again
    intra = c.intra_gbps if c.intra_gbps is not None else min(c.nic_gbps * 10, MAX_GBPS)
    return ClusterSpec(
        tuple(tuple(h) for h in c.hosts),
        float(c.nic_gbps),
        c.nics_per_host,
        float(intra),
        float(c.latency_us),
        c.duplex,
    )
