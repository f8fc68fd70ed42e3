"""The service's contract as pydantic models, for `/openapi.json` and `/docs` (DESIGN §1-2).

Requests are still checked by `planner.parse_request`, whose errors name the field and the
value in one line (the 422 body is `ErrorBody`); these models describe the same documents so
that clients in any language can be generated from the schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from meshcast.planner.request import MAX_DEVICE_ID, MAX_DIM, MAX_GBPS, MAX_NICS_PER_HOST, MIN_GBPS
from meshcast.planner.request import MAX_TIME_LIMIT_S as MAX_LIMIT_S

MAX_STAGES, MAX_MICROBATCHES = 256, 4096

Interval = list[int]
BoxJson = list[Interval]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayoutBody(_Doc):
    """Where a tensor lives on one side: a mesh and either placements or blocks."""

    mesh: str = Field(description="name of a mesh in `meshes`")
    placements: list[str] | None = Field(
        None,
        description="one per mesh axis: `R`, `S(k)` (shard tensor dim k, torch.chunk "
        "semantics) or `_S(k,f)` (DTensor's _StridedShard(k, split_factor=f))",
        examples=[["S(0)", "R"]],
    )
    blocks: list[list[BoxJson]] | None = Field(
        None,
        description="instead of placements: per mesh device (mesh order), the boxes it holds "
        "or must hold, `[[lo, hi], ...]` per tensor dim; source blocks cover the tensor",
    )


class TensorBody(_Doc):
    """One tensor to reshard."""

    name: str = Field(min_length=1, description="unique within the request")
    shape: list[int] = Field(description=f"global shape, each dim 0..{MAX_DIM}")
    dtype: str = Field(
        description="bool, uint8, int8, float8_e4m3fn, ..., float64", examples=["bfloat16"]
    )
    src: LayoutBody
    dst: LayoutBody


class MeshBody(_Doc):
    """A device mesh: N-D shape, devices row-major."""

    shape: list[int] = Field(min_length=1)
    devices: list[int] = Field(
        min_length=1, description=f"device ids = torch.distributed ranks, 0..{MAX_DEVICE_ID}"
    )


class ClusterBody(_Doc):
    """Hosts and links (port-v1, DESIGN §3)."""

    hosts: list[list[int]] = Field(min_length=1, description="device ids per host")
    nic_gbps: float = Field(ge=MIN_GBPS, le=MAX_GBPS, description="per NIC rail, Gbit/s")
    nics_per_host: int = Field(
        1, ge=1, le=MAX_NICS_PER_HOST, description="device j of a host uses rail j % nics"
    )
    intra_gbps: float | None = Field(
        None, ge=MIN_GBPS, le=MAX_GBPS, description="per device NVLink/PCIe, Gbit/s (10 x NIC)"
    )
    latency_us: float = Field(0.0, ge=0, le=1e6, description="per transfer and hop")
    duplex: Literal["full", "half"] = "full"


class OptionsBody(_Doc):
    """How to plan."""

    algorithm: str = Field("auto", description="one of GET /v1/algorithms")
    time_limit_s: float = Field(2.0, gt=0, le=MAX_LIMIT_S)
    seed: int = 0


#: a small complete request (DESIGN §1's example, scaled down), shown by `/docs` and sent by
#: schema-driven clients and fuzzers as a first valid case
REQUEST_EXAMPLE: dict[str, Any] = {
    "tensors": [
        {
            "name": "x",
            "shape": [1024, 1024],
            "dtype": "float32",
            "src": {"mesh": "stage0", "placements": ["S(0)", "R"]},
            "dst": {"mesh": "stage1", "placements": ["R", "S(1)"]},
        }
    ],
    "meshes": {
        "stage0": {"shape": [2, 2], "devices": [0, 1, 2, 3]},
        "stage1": {"shape": [2, 2], "devices": [4, 5, 6, 7]},
    },
    "cluster": {"hosts": [[0, 1, 2, 3], [4, 5, 6, 7]], "nic_gbps": 100, "nics_per_host": 2},
    "options": {"algorithm": "greedy", "time_limit_s": 0.5},
}


class RequestBody(_Doc):
    """`meshcast.request/v1`: tensors, meshes and the cluster."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [REQUEST_EXAMPLE]})

    tensors: list[TensorBody] = Field(min_length=1)
    meshes: dict[str, MeshBody] = Field(min_length=1)
    cluster: ClusterBody
    options: OptionsBody = OptionsBody()


class PieceBody(_Doc):
    """A box of one tensor carried by a transfer."""

    tensor: int = Field(description="index into the request's tensors")
    box: list[Interval] = Field(description="`[lo, hi)` per tensor dim")


class TransferBody(_Doc):
    """One message from `src` to every device of `dst` (chain order), in execution order."""

    id: int
    src: int
    dst: list[int]
    pieces: list[PieceBody]
    start_s: float
    end_s: float


class PlanBody(_Doc):
    """`meshcast.plan/v1`: the transfers in one global execution order, port-v1 times."""

    format: Literal["meshcast.plan/v1"]
    request_id: str = Field(description="sha256 of the canonical request")
    algorithm: str
    status: Literal["optimal", "feasible", "heuristic"]
    makespan_s: float
    lower_bound_s: float
    solve_time_s: float
    best_bound_s: float | None = None
    gap: float | None = None
    wire_bytes: int | None = None
    transfers: list[TransferBody]


class ErrorDetail(_Doc):
    """What is wrong, in one line."""

    field: str = Field(description="path of the offending field, e.g. tensors[0].src.placements[1]")
    message: str = Field(description="what is wrong with its value")


class ErrorBody(_Doc):
    """Every client error (4xx) and the rare 5xx."""

    detail: ErrorDetail


class CheckBody(_Doc):
    """A request and a plan for it."""

    request: RequestBody
    plan: PlanBody


class SummaryBody(_Doc):
    """A plan checked against its request: validity and port-v1 times recomputed."""

    algorithm: str
    status: Literal["optimal", "feasible", "heuristic"]
    valid: bool
    errors: list[str] = Field(description="the first validity errors (at most 20)")
    transfers: int
    wire_bytes: int = Field(description="bytes sent over NICs (intra-host copies not counted)")
    makespan_s: float = Field(description="port-v1 makespan recomputed from the request")
    lower_bound_s: float
    ratio: float | None = Field(description="makespan / lower bound; null when the bound is 0")
    best_bound_s: float | None = Field(description="a solver's proven bound, when it has one")
    solve_time_s: float
    busiest_port: str | None = Field(description="e.g. `host3/nic5/tx`")
    busiest_port_s: float | None = Field(description="how long the busiest port is held")


class CompareAnswer(_Doc):
    """Every algorithm's plan of one request, summarised (`POST /v1/compare`)."""

    request_id: str
    algorithms: list[SummaryBody]


class ScheduleBody(_Doc):
    """What `POST /v1/schedules` takes: a pipeline and how long its stages and boundaries take."""

    stages: int = Field(ge=1, le=MAX_STAGES)
    microbatches: int = Field(ge=1, le=MAX_MICROBATCHES)
    schedule: str | None = Field(
        None, description="`gpipe`, `1f1b` or `eager-1f1b`; every one when left out"
    )
    forward_ms: float | list[float] = Field(
        description="per stage: one value for all, or a list of `stages` values"
    )
    backward_ms: float | list[float] = Field(description="like `forward_ms`")
    boundaries: list[RequestBody] | None = Field(
        None,
        description="`stages - 1` plan requests in stage order; the activation transfer is "
        "planned as given, the gradient transfer reversed",
    )
    comm_ms: float | None = Field(
        None, ge=0, le=1e9, description="a fixed boundary time, when `boundaries` is left out"
    )


class BoundaryTimingBody(_Doc):
    """The plan makespans one stage boundary takes."""

    boundary: int
    activation_s: float
    gradient_s: float
    activation_request_id: str
    gradient_request_id: str


class ScheduleResultBody(_Doc):
    """One schedule simulated."""

    iteration_s: float
    bubble_fraction: float
    peak_inflight: list[int] = Field(
        description="per stage, the most micro-batches whose activations it holds at once"
    )


class ScheduleAnswer(_Doc):
    """`POST /v1/schedules`: each schedule's simulation, with the boundaries' plan times."""

    boundaries: list[BoundaryTimingBody]
    results: dict[str, ScheduleResultBody]


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads `model` as its JSON body (it parses the body
    itself, to answer with `ErrorBody`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


#: models the routes reference only through `request_body`, added to the schema's components
BODY_MODELS: tuple[type[BaseModel], ...] = (RequestBody, CheckBody, ScheduleBody)


def add_body_models(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (an OpenAPI document) with `BODY_MODELS` and what they use as components."""
    for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "$ref" in body.get("schema", {}):  # FastAPI's own title of an untyped body
            body["schema"].pop("title", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found
    return schema
