"""`meshcast serve` and `meshcast cache warm|export|import`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meshcast.api.cache import CacheError, PlanCache, open_cache
from meshcast.api.cli_common import UsageError, read_json
from meshcast.api.progress import progress
from meshcast.planner import PlanFormatError, RequestError, build_problem, parse_request
from meshcast.planner.plan import Plan
from meshcast.solver import SolveOptions, make_plan, resolve

DEFAULT_CACHE = ".meshcast/plans.sqlite3"


def _open(url: str) -> PlanCache:
    try:
        return open_cache(url)
    except CacheError as err:
        raise UsageError(str(err)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from meshcast.api.settings import Settings, SettingsError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port: expected 1-65535, got {args.port}")
    if args.workers < 1 or args.solver_processes < 0:
        raise UsageError("--workers must be at least 1 and --solver-processes at least 0")
    _open(args.cache).close()  # a bad URL or unreachable Redis fails here, in one line
    os.environ["MESHCAST_CACHE"] = args.cache
    os.environ["MESHCAST_SOLVER_PROCESSES"] = str(args.solver_processes)
    try:  # every worker reads them again; a bad one stops the start here, in one line
        Settings.from_env()
    except SettingsError as err:
        raise UsageError(str(err)) from None
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # every worker writes its samples here; /metrics adds them up
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="meshcast-metrics-")
    print(
        f"meshcast service on http://{args.host}:{args.port} (docs at /docs), cache {args.cache}, "
        f"{args.workers} worker(s) x {args.solver_processes} solver process(es)",
        file=sys.stderr,
    )
    uvicorn.run(
        "meshcast.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


def _request_files(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{folder!r} is not a directory")
    return sorted(path.glob("*.json"))


def _warm_one(path: Path, cache: PlanCache, args: argparse.Namespace) -> dict[str, Any]:
    """Plan one request file into `cache`: what happened, as the `--json` line says it."""
    try:
        request = parse_request(read_json(str(path), "request"))
        algorithm = args.algorithm or request.options.algorithm
        resolve(algorithm)
    except (UsageError, RequestError) as err:
        return {"outcome": "skipped", "message": f"skipped: {err}"}
    if cache.get(request.request_id) is not None:
        return {"outcome": "cached", "request_id": request.request_id, "message": "already cached"}
    limit = args.time_limit or request.options.time_limit_s
    started = time.perf_counter()
    plan = make_plan(build_problem(request), algorithm, SolveOptions(limit, request.options.seed))
    cache.put(request.request_id, plan.to_json_text(), request.to_json(), plan.algorithm)
    seconds = time.perf_counter() - started
    return {
        "outcome": "planned",
        "request_id": request.request_id,
        "algorithm": plan.algorithm,
        "seconds": round(seconds, 3),
        "ratio": plan.ratio,
        "message": f"planned with {plan.algorithm} in {seconds:.1f} s, ratio {plan.ratio:.3f}",
    }


def cmd_cache_warm(args: argparse.Namespace) -> int:
    files = _request_files(args.folder)
    cache, failed = _open(args.cache), 0
    try:
        with progress(len(files), "warming the cache", quiet=args.json) as steps:
            for k, path in enumerate(files, 1):
                steps.begin(path.name)
                result = _warm_one(path, cache, args)
                skipped = result["outcome"] == "skipped"
                failed += skipped
                message = result.pop("message")
                if args.json:
                    print(json.dumps({"file": path.name, **result}), flush=True)
                else:
                    print(
                        f"[{k}/{len(files)}] {path.name}: {message}",
                        file=sys.stderr if skipped else sys.stdout,
                        flush=True,
                    )
    finally:
        cache.close()
    return 1 if failed else 0


def cmd_cache_export(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache, count = _open(args.cache), 0
    try:
        for entry in cache.entries():
            body = {"request_id": entry.request_id, "request": entry.request, "plan": entry.plan}
            (folder / f"{entry.request_id}.json").write_text(json.dumps(body, indent=1))
            count += 1
    finally:
        cache.close()
    print(f"exported {count} plan(s) to {folder}")
    return 0


def _entry(path: Path) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    data = read_json(str(path), "plan file")
    raw_plan = data.get("plan", data) if isinstance(data, dict) else data
    raw_request = data.get("request") if isinstance(data, dict) else None
    try:
        plan = Plan.from_json(raw_plan)
    except PlanFormatError as err:
        raise UsageError(f"{path.name}: invalid plan: {err}") from None
    if raw_request is not None:
        try:
            request = parse_request(raw_request)
        except RequestError as err:
            raise UsageError(f"{path.name}: invalid request: {err}") from None
        if request.request_id != plan.request_id:
            raise UsageError(f"{path.name}: the plan was made for another request")
        return plan.request_id, plan.to_json(), request.to_json()
    return plan.request_id, plan.to_json(), None


def cmd_cache_import(args: argparse.Namespace) -> int:
    files = _request_files(args.folder)
    cache, imported, failed = _open(args.cache), 0, 0
    try:
        for path in files:
            try:
                request_id, plan, request = _entry(path)
            except UsageError as err:
                print(f"skipped {err}", file=sys.stderr)
                failed += 1
                continue
            cache.put(request_id, json.dumps(plan), request, str(plan.get("algorithm", "")))
            imported += 1
    finally:
        cache.close()
    print(
        f"imported {imported} plan(s) into {args.cache}" + (f", {failed} skipped" if failed else "")
    )
    return 1 if failed else 0


def add_serve_parsers(sub: Any) -> None:
    cache_default = os.environ.get("MESHCAST_CACHE", DEFAULT_CACHE)
    serve = sub.add_parser("serve", help="run the planning service (FastAPI + uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--cache", default=cache_default, help="SQLite path or redis://host:port/db")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--solver-processes", type=int, default=2, help="per worker; 0 = threads")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    cache = sub.add_parser("cache", help="fill, export or import the plan cache")
    actions = cache.add_subparsers(dest="action", required=True)
    warm = actions.add_parser("warm", help="plan every request file in a folder into the cache")
    warm.add_argument("folder")
    warm.add_argument("--algorithm", help="default: each request's")
    warm.add_argument("--time-limit", type=float, help="seconds per request (default: request's)")
    warm.add_argument("--json", action="store_true", help="one JSON object per request file")
    warm.set_defaults(func=cmd_cache_warm)
    export = actions.add_parser("export", help="write every cached plan as a file")
    export.add_argument("folder")
    export.set_defaults(func=cmd_cache_export)
    load = actions.add_parser("import", help="read plan files (from export) into the cache")
    load.add_argument("folder")
    load.set_defaults(func=cmd_cache_import)
    for action in (warm, export, load):
        action.add_argument("--cache", default=cache_default, help="SQLite path or redis:// URL")
