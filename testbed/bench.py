"""Plans measured on the testbed against their port-v1 prediction and the lower bound.

`bench` brings a testbed up for the request's cluster at the given NIC rate, calibrates it
(latency, p2p and intra-host bandwidth measured in the testbed itself), plans the request with
the calibrated figures, runs every plan with the executor (verified, median of the repeats,
barrier to barrier) and tears the testbed down, also on failure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshcast.executor.local_run import summarize
from meshcast.planner import build_problem, parse_request
from meshcast.planner.request import Request
from meshcast.solver import SolveOptions, make_plan
from meshcast.testbed import network
from meshcast.testbed.launch import run_job

#: chunks of 1 MiB keep a chain's pipeline fill small at testbed rates (about 1 Gbit/s)
TESTBED_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class BenchResult:
    """One algorithm on the testbed."""

    algorithm: str
    mode: str
    measured_s: float
    runs_s: list[float]
    predicted_s: float
    lower_bound_s: float
    verified: bool
    transfers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "mode": self.mode,
            "measured_s": self.measured_s,
            "runs_s": self.runs_s,
            "predicted_s": self.predicted_s,
            "lower_bound_s": self.lower_bound_s,
            "verified": self.verified,
            "transfers": self.transfers,
        }


def spec_for(
    request: Request, name: str, nic_gbps: float, latency_us: float
) -> network.TestbedSpec:
    """A testbed with the request's hosts, each link at `nics_per_host * nic_gbps`."""
    cluster = request.cluster
    host_of = {d: h for h, devices in enumerate(cluster.hosts) for d in devices}
    return network.TestbedSpec(
        name=name,
        num_hosts=len(cluster.hosts),
        host_gbps=nic_gbps * cluster.nics_per_host,
        latency_us=latency_us,
        host_of=host_of,
    )


def calibrated(request: Request, calibration: dict[str, Any]) -> dict[str, Any]:
    """The request with the measured link figures in its cluster."""
    data = copy.deepcopy(request.to_json())
    cluster = data["cluster"]
    if calibration.get("nic_gbps"):
        cluster["nic_gbps"] = calibration["nic_gbps"] / cluster["nics_per_host"]
    if calibration.get("intra_gbps"):
        cluster["intra_gbps"] = calibration["intra_gbps"]
    if calibration.get("latency_us") is not None:
        cluster["latency_us"] = calibration["latency_us"]
    return data


def _job(world_size: int, timeout_s: float, repeats: int, **fields: Any) -> dict[str, Any]:
    return {
        "world_size": world_size,
        "timeout_s": timeout_s,
        "repeats": repeats,
        "runs": [],
        **fields,
    }


def _calibration(
    spec: network.TestbedSpec, world_size: int, timeout_s: float, repeats: int
) -> dict[str, Any]:
    job = _job(
        world_size,
        timeout_s,
        repeats,
        calibrate=True,
        calibrate_bytes=16 << 20,
        chunk_bytes=TESTBED_CHUNK_BYTES,
        request=None,
    )
    calibration: dict[str, Any] = run_job(spec, job, timeout_s)[0]["calibration"]
    return calibration


def calibrate_testbed(
    request: Request, name: str, nic_gbps: float, latency_us: float | None, timeout_s: float = 300
) -> dict[str, Any]:
    """Bring a testbed up for the request's cluster, measure its links, take it down."""
    latency = request.cluster.latency_us if latency_us is None else latency_us
    spec = spec_for(request, name, nic_gbps, latency)
    with network.running(spec):
        return _calibration(spec, 1 + max(spec.host_of), timeout_s, repeats=3)


def bench_steps(algorithms: Sequence[str]) -> int:
    """How many steps `bench` reports: calibrating, one plan per algorithm, running them."""
    return len(algorithms) + 2


def bench(
    request: Request,
    algorithms: Sequence[str],
    *,
    name: str = "bench",
    nic_gbps: float = 0.5,
    latency_us: float | None = None,
    mode: str = "chain",
    repeats: int = 3,
    time_limit_s: float = 2.0,
    timeout_s: float = 600.0,
    progress: Callable[[str], None] = lambda _: None,
    step: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], list[BenchResult]]:
    """The calibration and one result per algorithm (see the module docstring). `progress`
    gets messages worth printing; `step` is called as each of the `bench_steps(algorithms)`
    steps begins, with what it is."""
    latency = request.cluster.latency_us if latency_us is None else latency_us
    spec = spec_for(request, name, nic_gbps, latency)
    world_size = 1 + max(spec.host_of)
    progress(
        f"testbed {name!r} up: {spec.num_hosts} hosts at {spec.host_gbps:g} Gbit/s, "
        f"{latency:g} us, {world_size} ranks"
    )
    with network.running(spec) as notes:
        for note in notes:
            progress(note)
        step("calibrating the links")
        calibration = _calibration(spec, world_size, timeout_s, repeats)
        progress(f"calibrated: {calibration}")
        model = calibrated(request, calibration)
        problem = build_problem(parse_request(model))
        options = SolveOptions(time_limit_s, request.options.seed)
        plans = []
        for algorithm in algorithms:
            step(f"planning with {algorithm}")
            plans.append(make_plan(problem, algorithm, options))
        runs = [
            {"plan": p.to_json(), "mode": mode, "chunk_bytes": TESTBED_CHUNK_BYTES} for p in plans
        ]
        progress(f"running {len(plans)} plan(s), {repeats} time(s) each")
        step(f"running {len(plans)} plan(s) x {repeats}")
        answers = run_job(
            spec, _job(world_size, timeout_s, repeats, request=model, runs=runs), timeout_s
        )
    results = []
    for k, plan in enumerate(plans):
        report = summarize(problem, plan, [answer["runs"][k] for answer in answers])
        results.append(
            BenchResult(
                plan.algorithm,
                mode,
                report.wall_s,
                report.runs_s,
                report.predicted_s,
                problem.lower_bound_s,
                report.verified,
                len(plan.transfers),
            )
        )
    return calibration, results
