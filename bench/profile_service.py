"""Where a /predict request spends its CPU time: py-spy on the service under wrk load.

Starts the service as shipped (one worker pinned to core 0), drives it with
wrk on core 1, and samples the worker with ``py-spy record --native`` (Python
and C frames) while it is under load. The folded stacks are then attributed to
the parts of the stack we can act on: uvicorn and its HTTP parser, Starlette,
FastAPI, Pydantic validation, our middleware, logging, metrics, our handler
code and NumPy.

Two views are printed: *self* time (each sample goes to the innermost frame
that belongs to a known component, so interpreter and stdlib frames count
towards whoever called them) and *inclusive* time of our own components (any
sample with that component anywhere on the stack).

Run: ``python -m bench.profile_service`` (needs py-spy: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.testing import running_server
from bench import load, machine, payloads, report, wrk
from bench.servers import CpuPlan, Server, Target, artifact_path, pinned
from model.atomic import write_text_atomic

PROFILE_DIR = report.RESULTS_DIR / "logs" / "profile"

#: (component, pattern matched against the frame's file or library). First match wins,
#: so the more specific patterns come first.
COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
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
)
#: Frames that say nothing about who is responsible: skipped when attributing self time.
GENERIC = re.compile(
    r"libpython|python3\.\d+|<frozen|contextlib\.py|typing\.py|abc\.py|functools\.py|"
    r"threading\.py|enum\.py|\(\?\?\)|^\?\?"
)
FRAME_FILE = re.compile(r"\(([^()]*)\)\s*$")


def frame_location(frame: str) -> str:
    """``'send (starlette/routing.py:72)'`` -> ``'starlette/routing.py:72'``; else the frame."""
    match = FRAME_FILE.search(frame)
    return match.group(1) if match else frame


def component_of(frame: str) -> str | None:
    location = frame_location(frame)
    for name, pattern in COMPONENTS:
        if pattern.search(location):
            return name
    return None


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
    self_samples: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in stacks:
        total += count
        owner = "other"
        for frame in reversed(frames):
            if GENERIC.search(frame_location(frame)):
                continue
            owner = component_of(frame) or "other"
            break
        self_samples[owner] += count
        seen = {c for c in (component_of(f) for f in frames) if c is not None}
        for name in seen:
            inclusive[name] += count
        python_leaf = next((f for f in reversed(frames) if ".py" in frame_location(f)), frames[-1])
        functions[python_leaf] += count
    return Attribution(
        total=total,
        self_samples=dict(self_samples.most_common()),
        inclusive=dict(inclusive.most_common()),
        top_functions=functions.most_common(top),
    )


def to_markdown(att: Attribution, title: str, cpu_us_per_request: float, context: str) -> str:
    """The three tables; 'us/request' splits the worker's CPU time per request (measured
    without the profiler, which slows the worker) in proportion to the samples."""

    def cells(n: int) -> list[str]:
        share = f"{100 * n / att.total:.1f}%" if att.total else "n/a"
        us = (
            f"{cpu_us_per_request * n / att.total:.1f}"
            if att.total and cpu_us_per_request > 0
            else "n/a"
        )
        return [str(n), share, us]

    columns = ["component", "samples", "share", "us/request"]
    own = report.table(columns, [[name, *cells(n)] for name, n in att.self_samples.items()])
    inclusive = report.table(columns, [[name, *cells(n)] for name, n in att.inclusive.items()])
    frames = [[f"`{fn}`", *cells(n)[:2]] for fn, n in att.top_functions]
    return "\n".join([
        f"## {title}", "", context, "",
        f"{att.total} samples. 'us/request' splits the worker's CPU time per request "
        f"({cpu_us_per_request:.0f} us, measured without the profiler) by the sample shares.",
        "", "### Self time by component (innermost frame we can attribute)", "", own,
        "", "### Inclusive time (component anywhere on the stack)", "", inclusive,
        "", "### Hottest Python-level frames (self)", "",
        report.table(["frame", "samples", "share"], frames),
    ])  # fmt: skip


def py_spy_path() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit(
            "py-spy is not installed: pip install -e '.[bench]' (or pip install py-spy)"
        )
    return found


def record(spy: str, pid: int, folded: Path, args: argparse.Namespace, plan: CpuPlan) -> None:
    """py-spy on the worker for ``args.duration`` seconds, on the load generator's core."""
    argv = [spy, "record", "--pid", str(pid), "--duration", str(round(args.duration))]
    argv += ["--rate", str(args.rate), "--format", "raw", "--nolineno", "--output", str(folded)]
    argv += [] if args.no_native else ["--native"]
    subprocess.run(pinned(argv, plan.client), check=True, capture_output=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_service", description=__doc__)
    p.add_argument("--endpoint", choices=["predict", "batch"], default="predict")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of sampling")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--artifact", type=Path, default=None)
    p.add_argument("--env", action="append", default=[], metavar="HEART_X=V",
                   help="extra service setting (e.g. HEART_ACCESS_LOG=false)")  # fmt: skip
    p.add_argument("--no-native", action="store_true", help="Python frames only")
    args = p.parse_args(argv)
    spy, plan = py_spy_path(), CpuPlan.for_this_machine()
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    extra = dict(item.split("=", 1) for item in args.env)
    name = f"{args.endpoint}-c{args.concurrency}" + "".join(
        f"-{k.removeprefix('HEART_').lower()}={v}" for k, v in extra.items()
    )
    folded = PROFILE_DIR / f"{name}.folded"
    settings = load.Settings(warmup_s=3.0, duration_s=5.0)
    with (
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
        artifact_path(args.artifact) as artifact,
        running_server(
            artifact, env=extra, log_dir=load.LOG_DIR, prefix=pinned([], plan.server)
        ) as s,
    ):
        made = payloads.standard_scenarios(Path(tmp), settings.batch_size)
        scenarios = {scenario.name: scenario for scenario in made}
        scenario, server = scenarios[args.endpoint], Server(Target("service", "service"), s)
        load.preflight(server, list(scenarios.values()))
        # Throughput and CPU per request without the profiler attached.
        run = load.Run(server.target, scenario, args.concurrency)
        unprofiled = load.measure(server, run, settings, plan.client)
        command = wrk.build_command(
            server.url(scenario.path),
            scenario.bodies,
            connections=args.concurrency,
            duration_s=args.duration + 6,
            cpus=plan.client,
        )
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as generator:
            time.sleep(3)  # warm-up under load
            record(spy, server.workers()[0], folded, args, plan)
            out, _ = generator.communicate(timeout=args.duration + 60)
        result = wrk.parse_output(out)
    att = attribute(parse_folded(folded.read_text().splitlines()))
    info = machine.describe()
    context = (
        f"Service as shipped{' with ' + ', '.join(args.env) if args.env else ''}, one worker "
        f"on core {plan.server}, wrk -c{args.concurrency} on core {plan.client}. Without the "
        f"profiler: {unprofiled['requests_per_s']:,.0f} req/s, worker CPU "
        f"{unprofiled['server_cpu_us_per_request']:.0f} us/request; while sampled at "
        f"{args.rate} Hz: {result.requests_per_s:,.0f} req/s. {info['date_utc']}, load "
        f"average {info['load_average_start']}, commit {info['commit']}. "
        f"Folded stacks: {folded.relative_to(machine.REPO_ROOT)}."
    )
    title = f"Profile: {scenario.path} at c={args.concurrency}"
    markdown = to_markdown(att, title, unprofiled["server_cpu_us_per_request"], context)
    write_text_atomic(PROFILE_DIR / f"{name}.md", markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
