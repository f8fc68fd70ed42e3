"""Request parsing: a table of invalid requests and the message each one gets."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from meshcast.planner import RequestError, parse_request

BASE: dict[str, Any] = {
    "tensors": [
        {
            "name": "x",
            "shape": [64, 32],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["S(0)", "R"]},
            "dst": {"mesh": "b", "placements": ["R", "S(1)"]},
        }
    ],
    "meshes": {
        "a": {"shape": [2, 2], "devices": [0, 1, 2, 3]},
        "b": {"shape": [2, 2], "devices": [4, 5, 6, 7]},
    },
    "cluster": {"hosts": [[0, 1, 2, 3], [4, 5, 6, 7]], "nic_gbps": 10},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at a dotted path replaced (`...=DELETE` removes the key)."""
    request = copy.deepcopy(BASE)
    node: Any = request
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    if value == "DELETE":
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return request


INVALID = [
    # unknown destination mesh name
    ("tensors.0.dst.mesh", "c", "tensors[0].dst.mesh", "unknown mesh 'c'"),
    # partial placements are not supported
    (
        "tensors.0.src.placements",
        ["P", "R"],
        "tensors[0].src.placements[0]",
        "partial placement 'P'",
    ),
    # placement naming a tensor dim that does not exist
    (
        "tensors.0.dst.placements",
        ["R", "S(2)"],
        "tensors[0].dst.placements[1]",
        "names tensor dim 2",
    ),
    # malformed placement text
    (
        "tensors.0.src.placements",
        ["Shard(0)", "R"],
        "tensors[0].src.placements[0]",
        "unsupported placement",
    ),
    # placements count differs from mesh axes
    (
        "tensors.0.src.placements",
        ["R"],
        "tensors[0].src.placements",
        "1 placements for mesh 'a' with 2 axes",
    ),
    # negative dimension
    ("tensors.0.shape", [64, -1], "tensors[0].shape[1]", "-1"),
    # absurd size
    ("tensors.0.shape", [2**40, 2**20], "tensors[0].shape", "over 1 PiB"),
    # dimension given as a string
    ("tensors.0.shape", [64, "32"], "tensors[0].shape[1]", "'32'"),
    # unknown dtype
    ("tensors.0.dtype", "complex64", "tensors[0].dtype", "unknown dtype 'complex64'"),
    # mesh size does not match its device count
    ("meshes.a.shape", [3, 2], "meshes.a.devices", "needs 6 devices, got 4"),
    # device listed twice in a mesh
    ("meshes.b.devices", [4, 5, 5, 7], "meshes.b.devices[2]", "device 5 is listed twice"),
    # device of a mesh on no host
    ("cluster.hosts", [[0, 1, 2, 3], [4, 5, 6]], "meshes.b.devices[3]", "device 7 is on no host"),
    # device on two hosts
    ("cluster.hosts", [[0, 1, 2, 3], [3, 4, 5, 6, 7]], "cluster.hosts[1][0]", "already on host 0"),
    # empty host
    ("cluster.hosts", [[0, 1, 2, 3], [4, 5, 6, 7], []], "cluster.hosts[2]", "no devices"),
    # zero bandwidth
    ("cluster.nic_gbps", 0, "cluster.nic_gbps", "greater than or equal to 0.001"),
    # negative latency
    ("cluster.latency_us", -5, "cluster.latency_us", "-5"),
    # unknown duplex mode
    ("cluster.duplex", "simplex", "cluster.duplex", "'simplex'"),
    # missing required field
    ("cluster.nic_gbps", "DELETE", "cluster.nic_gbps", "Field required"),
    # unexpected field (typo)
    ("cluster.nic_gpbs", 10, "cluster.nic_gpbs", "Extra inputs"),
    # no tensors at all
    ("tensors", [], "tensors", "at least 1"),
    # time limit out of range
    ("options", {"time_limit_s": 0}, "options.time_limit_s", "greater than 0"),
    # strided shards: malformed, a zero split factor, a missing dim
    ("tensors.0.src.placements", ["_S(0)", "R"], "tensors[0].src.placements[0]", "'_S(k,f)'"),
    ("tensors.0.src.placements", ["_S(0,0)", "R"], "tensors[0].src.placements[0]", "factor 0"),
    ("tensors.0.dst.placements", ["R", "_S(2,2)"], "tensors[0].dst.placements[1]", "dim 2"),
    # blocks: one list per device, boxes inside the tensor, sources covering it
    ("tensors.0.dst", {"mesh": "b", "blocks": [[]]}, "tensors[0].dst.blocks", "1 block lists"),
    (
        "tensors.0.dst",
        {"mesh": "b", "blocks": [[[[0, 65], [0, 32]]], [], [], []]},
        "tensors[0].dst.blocks[0][0][0]",
        "interval [0, 65]",
    ),
    (
        "tensors.0.dst",
        {"mesh": "b", "blocks": [[[[0, 64]]], [], [], []]},
        "tensors[0].dst.blocks[0][0]",
        "box has 1 intervals, tensor has 2 dims",
    ),
    (
        "tensors.0.src",
        {"mesh": "a", "blocks": [[[[0, 32], [0, 32]]], [], [], [[[33, 64], [0, 32]]]]},
        "tensors[0].src.blocks",
        "do not cover the tensor",
    ),
    (
        "tensors.0.src",
        {"mesh": "a", "placements": ["R", "R"], "blocks": [[], [], [], []]},
        "tensors[0].src",
        "either placements or blocks",
    ),
    ("tensors.0.src", {"mesh": "a"}, "tensors[0].src", "placements (one per mesh axis) or blocks"),
    # numbers bounded by what they can mean, before anything is allocated (fuzzing found
    # 75-90 GiB port arrays for nics_per_host = 10^9 and 2^63)
    ("cluster.nics_per_host", 10**9, "cluster.nics_per_host", "less than or equal to 64"),
    ("cluster.nics_per_host", 2**63, "cluster.nics_per_host", "less than or equal to 64"),
    ("meshes.a.devices", [0, 1, 2, 2**40], "meshes.a.devices[3]", "less than or equal to"),
    ("tensors.0.shape", [2**60, 1], "tensors[0].shape[0]", "less than or equal to"),
    ("options", {"seed": 2**64}, "options.seed", "less than or equal to"),
    (
        "tensors.0.src.placements",
        ["_S(0,1024)", "_S(1,1024)"],
        "tensors[0].src.placements",
        "over the limit of 1,048,576",
    ),
    # destination dtypes: a float converts to a float, nothing else; the source has none
    ("tensors.0.dst.dtype", "float31", "tensors[0].dst.dtype", "unknown dtype 'float31'"),
    ("tensors.0.dst.dtype", "int32", "tensors[0].dst.dtype", "only a float converts"),
    ("tensors.0.src.dtype", "bfloat16", "tensors[0].src.dtype", "the source's dtype is"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "fragment"), INVALID, ids=[r[2] for r in INVALID]
)
def test_invalid_request_names_field_and_value(
    path: str, value: Any, field: str, fragment: str
) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(with_change(path, value))
    assert info.value.field == field
    assert fragment in str(info.value)
    assert str(info.value).startswith(field)


def test_duplicate_tensor_names_are_rejected() -> None:
    request = copy.deepcopy(BASE)
    request["tensors"].append(copy.deepcopy(request["tensors"][0]))
    with pytest.raises(RequestError, match=r"tensors\[1\].name: duplicate tensor name 'x'"):
        parse_request(request)


def test_non_object_request() -> None:
    with pytest.raises(RequestError, match="expected a JSON object, got list"):
        parse_request([1, 2])


def test_defaults_and_placements() -> None:
    request = parse_request(BASE)
    assert request.cluster.intra_gbps == 100.0
    assert request.cluster.duplex == "full"
    assert request.options.algorithm == "auto"
    assert request.tensors[0].src.placements == (0, None)
    assert request.tensors[0].dst.placements == (None, 1)


def test_request_id_is_canonical() -> None:
    shuffled = json.loads(json.dumps(BASE, sort_keys=True))
    shuffled["meshes"] = dict(reversed(list(shuffled["meshes"].items())))
    explicit = copy.deepcopy(BASE)
    explicit["cluster"].update({"nics_per_host": 1, "latency_us": 0.0, "duplex": "full"})
    ids = {parse_request(r).request_id for r in (BASE, shuffled, explicit)}
    assert len(ids) == 1
    assert parse_request(with_change("cluster.nic_gbps", 20)).request_id not in ids


def test_a_destination_dtype_is_canonical_and_sizes_the_wire() -> None:
    same = parse_request(with_change("tensors.0.dst.dtype", "float32"))
    assert same.request_id == parse_request(BASE).request_id  # the same dtype named: no change
    narrower = parse_request(with_change("tensors.0.dst.dtype", "bfloat16"))
    (tensor,) = narrower.tensors
    assert (tensor.dtype, tensor.wire_dtype, tensor.itemsize_bytes) == ("float32", "bfloat16", 2)
    assert narrower.to_json()["tensors"][0]["dst"]["dtype"] == "bfloat16"
    assert parse_request(narrower.to_json()).request_id == narrower.request_id
    assert narrower.request_id != same.request_id


def test_blocks_too_finely_cut_are_refused_before_any_grid_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [[[i, i + 1], [0, 32]] for i in range(64)]
    cols = [[[0, 64], [j, j + 1]] for j in range(32)]
    request = with_change("tensors.0.src", {"mesh": "a", "blocks": [rows, cols, [], []]})
    parse_request(request)  # 2,048 cells
    monkeypatch.setattr("meshcast.planner.request.MAX_BLOCK_CELLS", 2047)
    with pytest.raises(RequestError, match="2,048 cells, over the limit of 2,047") as info:
        parse_request(request)
    assert info.value.field == "tensors[0].src.blocks"


def test_strided_and_block_layouts_round_trip() -> None:
    blocks = [[[[0, 16], [0, 32]], [[48, 64], [0, 32]]], [[[16, 48], [0, 32]]], [], []]
    request = with_change("tensors.0.src", {"mesh": "a", "placements": ["_S(0, 2)", "S(0)"]})
    request["tensors"][0]["dst"] = {"mesh": "b", "blocks": blocks}
    parsed = parse_request(request)
    again = parse_request(parsed.to_json())
    assert again == parsed and again.request_id == parsed.request_id
    assert parsed.to_json()["tensors"][0]["src"]["placements"] == ["_S(0,2)", "S(0)"]
    assert parsed.to_json()["tensors"][0]["dst"]["blocks"] == blocks


def test_the_canonical_request_parses_again_at_the_limits() -> None:
    """The service's solver processes parse the canonical form: it must stay valid."""
    request = with_change("cluster.nic_gbps", 9_999_999.0)
    canonical = parse_request(request).to_json()
    assert parse_request(canonical).request_id == parse_request(request).request_id


def test_request_errors_survive_pickling() -> None:
    import pickle

    err = RequestError("cluster.nic_gbps", "too fast")
    again = pickle.loads(pickle.dumps(err))
    assert (again.field, again.message, str(again)) == (err.field, err.message, str(err))
