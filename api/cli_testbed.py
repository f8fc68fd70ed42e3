"""`meshcast testbed up|down|status|bench|calibrate` and `meshcast calibrate`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from meshcast.api.cli_common import UsageError, load_problem
from meshcast.api.cli_run import parse_size
from meshcast.api.progress import progress
from meshcast.planner import RequestError, build_problem, parse_request
from meshcast.planner.problem import Problem
from meshcast.planner.synthetic import scaled_request
from meshcast.solver import resolve


def _problem(args: argparse.Namespace) -> Problem:
    problem = load_problem(args.request)
    if getattr(args, "max_bytes", None) is None:
        return problem
    try:
        return build_problem(
            parse_request(scaled_request(problem.request.to_json(), args.max_bytes))
        )
    except ValueError as err:
        raise UsageError(f"--max-bytes: {err}") from None


def _testbed_name(value: str) -> str:
    from meshcast.testbed.network import TestbedError, check_name

    try:
        return check_name(value)
    except TestbedError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _checked(args: argparse.Namespace) -> None:
    from meshcast.testbed.network import TestbedError, check_available

    if not 0 < args.nic_gbps <= 100:
        raise UsageError(f"--nic-gbps: expected (0, 100], got {args.nic_gbps}")
    if args.latency_us is not None and not 0 <= args.latency_us <= 1e6:
        raise UsageError(f"--latency-us: expected [0, 1000000], got {args.latency_us}")
    try:
        check_available()
    except TestbedError as err:
        raise UsageError(str(err)) from None


def cmd_up(args: argparse.Namespace) -> int:
    from meshcast.testbed import network
    from meshcast.testbed.bench import spec_for

    _checked(args)
    problem = _problem(args)
    latency = problem.request.cluster.latency_us if args.latency_us is None else args.latency_us
    spec = spec_for(problem.request, args.name, args.nic_gbps, latency)
    try:
        notes = network.up(spec)
    except network.TestbedError as err:
        print(f"meshcast: testbed failed: {err}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(network.status(args.name))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from meshcast.testbed import network

    removed = network.down(args.name)
    print(
        f"removed {len(removed)} namespace(s)" if removed else f"testbed {args.name!r} was not up"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from meshcast.testbed import network

    print(network.status(args.name))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from meshcast.testbed.bench import bench, bench_steps
    from meshcast.testbed.network import TestbedError

    if not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise UsageError(f"--time-limit: expected seconds > 0, got {args.time_limit}")
    _checked(args)
    problem = _problem(args)
    algorithms = args.algorithms.split(",")
    for name in algorithms:
        try:
            resolve(name)
        except RequestError as err:
            raise UsageError(f"--algorithms: {err.message}") from None
    if args.repeats < 3:
        raise UsageError(f"--repeats: at least 3 (the median is reported), got {args.repeats}")
    try:
        with progress(bench_steps(algorithms), "testbed bench", quiet=args.json) as steps:
            calibration, results = bench(
                problem.request,
                algorithms,
                name=args.name,
                nic_gbps=args.nic_gbps,
                latency_us=args.latency_us,
                mode=args.mode,
                repeats=args.repeats,
                time_limit_s=args.time_limit,
                progress=lambda message: print(message, file=sys.stderr, flush=True),
                step=steps.begin,
            )
    except TestbedError as err:
        print(f"meshcast: testbed failed: {err}", file=sys.stderr)
        return 1
    header = (
        f"{'algorithm':<20} {'measured s':>11} {'predicted s':>12} {'ratio':>6} {'bound s':>9} "
        "verified"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.algorithm:<20} {r.measured_s:>11.3f} {r.predicted_s:>12.3f} "
            f"{r.measured_s / r.predicted_s:>6.2f} {r.lower_bound_s:>9.3f} {r.verified}"
        )
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"calibration": calibration, "results": [r.to_json() for r in results]}))
    return 0 if all(r.verified for r in results) else 1


def cmd_testbed_calibrate(args: argparse.Namespace) -> int:
    from meshcast.testbed.bench import calibrate_testbed
    from meshcast.testbed.network import TestbedError

    _checked(args)
    problem = _problem(args)
    try:
        figures = calibrate_testbed(problem.request, args.name, args.nic_gbps, args.latency_us)
    except TestbedError as err:
        print(f"meshcast: testbed failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(_cluster_fields(figures)))
    return 0


def _cluster_fields(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "nic_gbps": figures["nic_gbps"],
        "intra_gbps": figures["intra_gbps"],
        "latency_us": figures["latency_us"],
        "measured": figures,
    }


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Inside a torch.distributed world started by torchrun (RANK, WORLD_SIZE, MASTER_ADDR)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise UsageError(
            "calibrate runs inside a torch.distributed world: start it on every rank with "
            "`torchrun --nnodes N --nproc-per-node G ... -m api.cli calibrate` "
            "(or use `meshcast testbed calibrate REQUEST.json`)"
        )
    import torch.distributed as dist

    from meshcast.executor.calibrate import calibrate

    dist.init_process_group(args.backend)
    try:
        figures = calibrate(args.bytes, args.repeats)
    finally:
        dist.destroy_process_group()
    if int(os.environ["RANK"]) == 0:
        print(json.dumps(_cluster_fields(figures)))
    return 0


def add_testbed_parsers(sub: Any) -> None:
    testbed = sub.add_parser("testbed", help="an emulated multi-host cluster (root, ip netns, tc)")
    actions = testbed.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser, with_request: bool = True) -> None:
        if with_request:
            p.add_argument("request", help="meshcast.request/v1 JSON file (its cluster)")
            p.add_argument(
                "--nic-gbps",
                type=float,
                default=0.5,
                help="each rail's rate in the testbed (default 0.5)",
            )
            p.add_argument("--latency-us", type=float, help="one-way delay (default: request's)")
            p.add_argument("--max-bytes", type=parse_size, help="scale the tensors down first")
        p.add_argument(
            "--name",
            type=_testbed_name,
            default="tb",
            help="testbed name (namespaces meshcast-NAME-*)",
        )

    up = actions.add_parser("up", help="create the namespaces, links and limits")
    common(up)
    up.set_defaults(func=cmd_up)
    down = actions.add_parser("down", help="remove every namespace of the testbed")
    common(down, with_request=False)
    down.set_defaults(func=cmd_down)
    status = actions.add_parser("status", help="namespaces, addresses, bytes sent")
    common(status, with_request=False)
    status.set_defaults(func=cmd_status)
    bench = actions.add_parser("bench", help="run plans in a fresh testbed: measured vs predicted")
    common(bench)
    bench.add_argument("--algorithms", default="sendrecv,broadcast-lb,auto")
    bench.add_argument("--mode", choices=["chain", "broadcast"], default="chain")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--time-limit", type=float, default=2.0, help="seconds per solver")
    bench.add_argument("--json", action="store_true", help="last line: one JSON object")
    bench.set_defaults(func=cmd_bench, name="bench")
    calibrate_tb = actions.add_parser("calibrate", help="measure the testbed's links")
    common(calibrate_tb)
    calibrate_tb.set_defaults(func=cmd_testbed_calibrate, name="calibrate")

    calibrate = sub.add_parser(
        "calibrate", help="measure this torch.distributed world's links (run under torchrun)"
    )
    calibrate.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    calibrate.add_argument("--bytes", type=parse_size, default=32 << 20)
    calibrate.add_argument("--repeats", type=int, default=3)
    calibrate.set_defaults(func=cmd_calibrate)
