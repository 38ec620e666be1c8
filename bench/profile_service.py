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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import load, machine, payloads, report, servers, wrk
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
    stacks: list[tuple[list[str], int]] = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


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
    def share(n: int) -> str:
        return f"{100 * n / att.total:.1f}%" if att.total else "n/a"

    def per_request(n: int) -> str:
        if not att.total or not cpu_us_per_request > 0:
            return "n/a"
        # The worker's CPU time per request (measured without the profiler),
        # split in proportion to the samples.
        return f"{cpu_us_per_request * n / att.total:.1f}"

    self_rows = [[name, str(n), share(n), per_request(n)] for name, n in att.self_samples.items()]
    incl_rows = [[name, str(n), share(n), per_request(n)] for name, n in att.inclusive.items()]
    fn_rows = [[f"`{fn}`", str(n), share(n)] for fn, n in att.top_functions]
    return "\n".join(
        [
            f"## {title}",
            "",
            context,
            "",
            f"{att.total} samples. 'us/request' splits the worker's CPU time per request "
            f"({cpu_us_per_request:.0f} us, measured without the profiler) by the sample shares.",
            "",
            "### Self time by component (innermost frame we can attribute)",
            "",
            report.table(["component", "samples", "share", "us/request"], self_rows),
            "",
            "### Inclusive time (component anywhere on the stack)",
            "",
            report.table(["component", "samples", "share", "us/request"], incl_rows),
            "",
            "### Hottest Python-level frames (self)",
            "",
            report.table(["frame", "samples", "share"], fn_rows),
        ]
    )


def py_spy_path() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit(
            "py-spy is not installed: pip install -e '.[bench]' (or pip install py-spy)"
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_service", description=__doc__)
    p.add_argument("--endpoint", choices=["predict", "batch"], default="predict")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of sampling")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--artifact", type=Path, default=None)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="HEART_X=V",
        help="extra service setting (e.g. HEART_ACCESS_LOG=false)",
    )
    p.add_argument("--no-native", action="store_true", help="Python frames only")
    args = p.parse_args(argv)
    spy = py_spy_path()
    plan = load.CpuPlan.for_this_machine()
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    extra = dict(item.split("=", 1) for item in args.env)
    name = f"{args.endpoint}-c{args.concurrency}" + "".join(
        f"-{k.removeprefix('HEART_').lower()}={v}" for k, v in extra.items()
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
        load.artifact_path(args.artifact) as artifact,
    ):
        bodies = {
            "predict": payloads.write_single_bodies(Path(tmp) / "predict.jsonl"),
            "batch": payloads.write_batch_bodies(Path(tmp) / "batch.jsonl", batch_size=1000),
        }
        port = servers.free_port()
        target = load.Target(
            "service",
            "service",
            load.service_argv(port),
            env={**load.service_env(artifact), **extra},
            ready_path="/ready",
        )
        server = load.start_target(target, port, plan.server, load.LOG_DIR, None)
        try:
            load.preflight(server, target, bodies, 1000)
            path = "/predict" if args.endpoint == "predict" else "/predict/batch"
            # Throughput and CPU per request without the profiler attached.
            unprofiled = load.measure(
                server,
                target,
                load.Scenario("service", args.endpoint, args.concurrency),
                bodies[args.endpoint],
                load.Settings(warmup_s=3.0, duration_s=5.0),
                plan,
                load.LOG_DIR / "wrk.log",
            )
            load_argv = wrk.build_command(
                server.url(path),
                bodies[args.endpoint],
                connections=args.concurrency,
                duration_s=args.duration + 6,
                cpus=plan.client,
            )
            generator = subprocess.Popen(load_argv, stdout=subprocess.PIPE, text=True)
            try:
                subprocess.run(["sleep", "3"], check=True)  # warm-up under load
                folded = PROFILE_DIR / f"{name}.folded"
                spy_argv = [
                    spy,
                    "record",
                    "--pid",
                    str(server.workers()[0]),
                    "--duration",
                    str(round(args.duration)),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--nolineno",
                    "--output",
                    str(folded),
                ]
                if not args.no_native:
                    spy_argv.append("--native")
                subprocess.run(
                    servers.pinned(spy_argv, plan.client), check=True, capture_output=True
                )
                out, _ = generator.communicate(timeout=args.duration + 60)
            finally:
                if generator.poll() is None:
                    generator.kill()
            result = wrk.parse_output(out)
        finally:
            server.stop()
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
    markdown = to_markdown(
        att,
        f"Profile: {path} at c={args.concurrency}",
        unprofiled["server_cpu_us_per_request"],
        context,
    )
    write_text_atomic(PROFILE_DIR / f"{name}.md", markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
