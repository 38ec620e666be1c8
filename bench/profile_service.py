"""Where a request spends its CPU time: py-spy on the service under wrk load.

One pinned worker of the service as shipped, driven by wrk on the other core and
sampled by ``py-spy record --native``; the stacks are attributed to the parts we
can act on (:data:`COMPONENTS`) by *self* time (the innermost known frame, so
interpreter frames count towards their caller) and *inclusive* time. Findings:
bench/PROFILE.md. Needs py-spy: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import load, report, servers, wrk
from bench.servers import CpuPlan, Target
from training.report import markdown_table

PROFILE_DIR = report.RESULTS_DIR / "logs" / "profile"

#: (component, pattern of the frame's file or library); first match wins, so specific first.
COMPONENTS = [
    (name, re.compile(pattern))
    for name, pattern in (
        ("our middleware", r"app/middleware\.py"),
        ("logging", r"app/logs\.py|(^|/)logging/"),
        ("metrics", r"app/metrics\.py|prometheus_client/"),
        ("our handler", r"app/(routes|service|runtime)\.py"),
        ("predictor + NumPy", r"model/predictor\.py|numpy|libopenblas|libscipy_openblas"),
        ("Pydantic", r"pydantic"),
        ("FastAPI", r"fastapi/"),
        ("Starlette", r"starlette/"),
        ("uvicorn + HTTP parser", r"uvicorn/|httptools|h11/"),
        ("event loop (uvloop/asyncio)", r"uvloop|asyncio/"),
        ("JSON", r"(^|/)json/|_json"),
        ("kernel/libc (syscalls)", r"libc[.-]|vdso|\[kernel"),
    )
]
#: Frames that say nothing about who is responsible: skipped when attributing self time.
GENERIC = re.compile(
    r"libpython|python3\.\d+|<frozen|contextlib\.py|typing\.py|abc\.py|functools\.py|"
    r"threading\.py|enum\.py|\(\?\?\)|^\?\?"
)


def location(frame: str) -> str:
    """``'send (starlette/routing.py:72)'`` -> ``'starlette/routing.py:72'``; else the frame."""
    match = re.search(r"\(([^()]*)\)\s*$", frame)
    return match.group(1) if match else frame


def component_of(frame: str) -> str | None:
    return next((name for name, p in COMPONENTS if p.search(location(frame))), None)


def parse_folded(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy's raw format: ``frame;frame;...;leaf COUNT`` per line, root first."""
    split = (line.rstrip("\n").rpartition(" ") for line in lines if line.strip())
    return [(stack.split(";"), int(count)) for stack, _, count in split]


@dataclass(frozen=True)
class Attribution:
    total: int
    self_samples: dict[str, int]
    inclusive: dict[str, int]
    top_functions: list[tuple[str, int]]


def attribute(stacks: list[tuple[list[str], int]], top: int = 25) -> Attribution:
    """Self time by component (innermost known frame) and inclusive time by component."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for frames, count in stacks:
        known = (f for f in reversed(frames) if not GENERIC.search(location(f)))
        own[component_of(next(known, "")) or "other"] += count
        for name in {c for c in map(component_of, frames) if c is not None}:
            inclusive[name] += count
        functions[next((f for f in reversed(frames) if ".py" in location(f)), frames[-1])] += count
    return Attribution(
        sum(count for _, count in stacks),
        dict(own.most_common()),
        dict(inclusive.most_common()),
        functions.most_common(top),
    )


def to_markdown(att: Attribution, cpu_us_per_request: float) -> list[str]:
    """The three tables; 'us/request' splits the worker's CPU time per request (measured
    without the profiler, which slows the worker) in proportion to the samples."""

    def cells(n: int) -> list[str]:
        share, us = n / att.total if att.total else float("nan"), cpu_us_per_request
        return [str(n), f"{100 * share:.1f}%", f"{us * share:.1f}" if us > 0 else "n/a"]

    columns = ["component", "samples", "share", "us/request"]
    own = markdown_table(columns, [[name, *cells(n)] for name, n in att.self_samples.items()])
    inclusive = markdown_table(columns, [[name, *cells(n)] for name, n in att.inclusive.items()])
    frames = [[f"`{fn}`", *cells(n)[:2]] for fn, n in att.top_functions]
    return [
        f"{att.total} samples. 'us/request' splits the worker's CPU time per request "
        f"({cpu_us_per_request:.0f} us, measured without the profiler) by the sample shares.",
        f"### Self time by component (innermost frame we can attribute)\n\n{own}",
        f"### Inclusive time (component anywhere on the stack)\n\n{inclusive}",
        "### Hottest Python-level frames (self)",
        markdown_table(["frame", "samples", "share"], frames),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_service", description=__doc__)
    p.add_argument("--endpoint", choices=["predict", "batch"], default="predict")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of sampling")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--artifact", type=servers.model_path, default=str(servers.DEFAULT_MODEL))
    p.add_argument("--no-native", action="store_true", help="Python frames only")
    p.add_argument("--env", action="append", default=[], metavar="HEART_X=V", help="a setting")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    plan, settings = CpuPlan.for_this_machine(), load.Settings(warmup_s=3.0, duration_s=5.0)
    command = report.command_line("bench.profile_service", argv)
    data: dict[str, Any] = {"machine": report.describe(), "command": command}
    name = "-".join([args.endpoint, f"c{args.concurrency}", *args.env]).replace("HEART_", "")
    folded = PROFILE_DIR / f"{name}.folded"
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    extra = tuple(tuple(item.split("=", 1)) for item in args.env)  # e.g. HEART_ACCESS_LOG=false
    service = Target("service", "the service", settings=extra)
    with (
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
        servers.started(service, args.artifact, load.LOG_DIR, plan.server) as server,
    ):
        scenario = wrk.standard_scenarios(Path(tmp), settings.batch_size)[args.endpoint == "batch"]
        load.preflight(server, [scenario])
        run = load.Run(server.target, scenario, args.concurrency)
        # Measured without the profiler (which slows the worker), warm-up included.
        unprofiled = load.measure(server, run, settings, plan.client)
        spy_argv = [spy, "record", "--pid", str(server.workers()[0]), "--rate", str(args.rate)]
        spy_argv += ["--duration", str(round(args.duration)), "--format", "raw", "--nolineno"]
        spy_argv += ["--output", str(folded), *([] if args.no_native else ["--native"])]
        sampling = subprocess.Popen(servers.pinned(spy_argv, plan.client), stdout=subprocess.PIPE)
        # wrk outlasts the sampling by a few seconds, so that every sample is under load.
        under_spy = replace(settings, warmup_s=0.0, duration_s=args.duration + 3)
        profiled = load.measure(server, run, under_spy, plan.client)
        if sampling.wait(60) != 0:
            raise SystemExit(f"py-spy failed with {sampling.returncode}")
    if failed := sum(sum(r["errors"].values()) for r in (unprofiled, profiled)):
        raise SystemExit(f"{failed} requests failed: a profile of error replies is worthless")
    cpu_us = unprofiled["server_cpu_us_per_request"]
    context = (
        f"{' '.join(['Service as shipped', *args.env])}, one worker on core {plan.server}, wrk "
        f"-c{args.concurrency} on core {plan.client}. Without the profiler: "
        f"{unprofiled['requests_per_s']:,.0f} req/s, worker CPU {cpu_us:.0f} us/request; "
        f"while sampled at {args.rate} Hz: {profiled['requests_per_s']:,.0f} req/s. "
        f"Folded stacks: {folded.relative_to(report.REPO_ROOT)}."
    )
    att = attribute(parse_folded(folded.read_text().splitlines()))
    data["attribution"], parts = asdict(att), [context, *to_markdown(att, cpu_us)]
    title = f"Profile: {scenario.path} at c={args.concurrency}"
    return report.publish(name, title, data, parts, PROFILE_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
