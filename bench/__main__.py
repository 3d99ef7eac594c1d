"""`python -m bench [--smoke] [--out DIR] [--only GROUP]`: measure, write latest.*, print."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import measure_service, raw
from bench.chart import draw
from bench.figures import Run
from bench.report import run_meta, write
from bench.sizes import FULL, SMOKE, Sizes
from bench.targets import evaluate

Measure = Callable[[Run, Path, Sizes], None]

# Run in this order: the service's ratios need the raw figures of the same run.
GROUPS: dict[str, Measure] = {
    "redis": raw.measure_redis_floor,
    "celery": raw.measure_celery,
    "service": measure_service.measure_all,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small N, under a minute")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--only", action="append", choices=sorted(GROUPS), help="run only this group (repeatable)"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the processes' logs (kept anyway when a group fails)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    selected = [name for name in GROUPS if not args.only or name in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="trustcard-bench-"))
    run = Run()
    started = time.monotonic()
    for name in selected:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        group_started = time.monotonic()
        try:
            GROUPS[name](run, workdir, sizes)
        except Exception as exc:
            traceback.print_exc()
            run.failures[name] = f"{type(exc).__name__}: {exc}"
        print(
            f"bench: {name} took {time.monotonic() - group_started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    run.resolve_ratios()
    evaluate(run)
    meta = run_meta(
        "smoke" if args.smoke else "full", time.monotonic() - started, os.cpu_count() or 1
    )
    text = write(run, sizes, meta, args.out)
    draw(run, args.out / "latest.png")
    print(text)
    print(f"bench: wrote {args.out}/latest.md, latest.json, latest.png", file=sys.stderr)
    if run.failures or args.keep_logs:
        print(f"bench: process logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
