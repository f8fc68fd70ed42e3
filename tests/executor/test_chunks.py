"""Packing chunks from a sender's tensors and unpacking them into a receiver's, without
processes: every byte lands where the reference says, staged or in place."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from meshcast.executor.chunks import LocalTensors  # noqa: E402
from meshcast.executor.dtypes import TORCH_DTYPES  # noqa: E402
from meshcast.executor.local_run import strided_copy  # noqa: E402
from meshcast.executor.program import numbered, rank_program  # noqa: E402
from meshcast.executor.reference import reference_box, same_bytes  # noqa: E402
from meshcast.planner import build_problem, parse_request  # noqa: E402
from meshcast.planner.plan import Piece, Plan, Transfer  # noqa: E402

REQUEST = {
    "tensors": [
        {
            "name": "w",
            "shape": [6, 10],
            "dtype": "bfloat16",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["R"]},
        },
        {
            "name": "v",
            "shape": [4, 6],
            "dtype": "float32",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["S(1)"]},
        },
        {
            "name": "m",
            "shape": [7],
            "dtype": "bool",
            "src": {"mesh": "a", "placements": ["R"]},
            "dst": {"mesh": "b", "placements": ["R"]},
        },
    ],
    "meshes": {"a": {"shape": [1], "devices": [0]}, "b": {"shape": [2], "devices": [1, 2]}},
    "cluster": {"hosts": [[0], [1, 2]], "nic_gbps": 10, "latency_us": 1},
}
# one message to device 1: rows of w (contiguous on both sides), all of v (device 1 keeps
# columns 0-2), 7 bools, the other rows of w
PIECES = (
    Piece(0, ((0, 4), (0, 10))),
    Piece(1, ((0, 4), (0, 6))),
    Piece(2, ((0, 7),)),
    Piece(0, ((4, 6), (0, 10))),
)


def _tensors(rank: int, strided: bool) -> tuple[LocalTensors, list[torch.Tensor]]:
    request = parse_request(REQUEST)
    problem = build_problem(request)
    plan = Plan("", "test", (Transfer(0, (1,), PIECES),))
    program = rank_program(problem, numbered(plan), rank, chunk_bytes=16)
    dtypes = [TORCH_DTYPES[t.dtype] for t in request.tensors]
    sources = [
        reference_box(
            request.tensors[r.tensor].name,
            request.tensors[r.tensor].shape,
            request.tensors[r.tensor].dtype,
            r.box,
        )
        for r in program.sources
    ]
    destinations = [
        torch.zeros(tuple(hi - lo for lo, hi in r.box), dtype=dtypes[r.tensor])
        for r in program.destinations
    ]
    if strided:
        sources = [strided_copy(t) for t in sources]
        destinations = [strided_copy(t) for t in destinations]
    local = LocalTensors(program, dtypes, sources, destinations, torch.device("cpu"))
    return local, destinations


@pytest.mark.parametrize("strided", [False, True])
def test_a_message_packed_chunk_by_chunk_unpacks_exactly(strided: bool) -> None:
    sender, _ = _tensors(0, strided)
    receiver, received = _tensors(1, strided)
    (send_step,), (recv_step,) = sender.program.steps, receiver.program.steps
    message = send_step.message
    direct = 0
    for k in range(message.num_chunks):
        slot = torch.full((16,), 0xEE, dtype=torch.uint8)[: message.chunk_length(k)]
        view = sender.direct(send_step, k)
        if view is None:
            sender.copy_chunk(send_step, k, slot, to_wire=True)
        else:
            slot.copy_(view)
            direct += 1
        into = receiver.direct(recv_step, k)
        if into is None:
            receiver.copy_chunk(recv_step, k, slot, to_wire=False)
        else:
            into.copy_(slot)
    w, v, m = received
    assert same_bytes(w, reference_box("w", (6, 10), "bfloat16", ((0, 6), (0, 10))))
    assert same_bytes(v, reference_box("v", (4, 6), "float32", ((0, 4), (0, 3))))
    assert same_bytes(m, reference_box("m", (7,), "bool", ((0, 7),)))
    # contiguous rows of contiguous tensors go straight from one caller's tensor to the other
    assert (direct > 0) == (not strided)
