#!/usr/bin/env python3
"""Compare the containerised service with the service run from source, over HTTP.

Called by scripts/container-smoke.sh once both servers are started; standard
library only, so it runs with any python3 >= 3.11 on the host. Checks:

- both become ready and serve the same model version;
- every curl example of README.md that targets localhost:8000 is run as
  written (only the port is changed) against both servers: same HTTP status,
  same JSON body (floats equal within 1e-9; /metrics bodies differ by nature
  and only their status is compared); at least one example must predict;
- /metrics answers JSON by default and the Prometheus text format for
  ``?format=prometheus`` and for ``Accept: text/plain``;
- with --api-key: a prediction without the key is refused, with it accepted.

Prints one line per check; exits 1 on the first failed check.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README_HOST = "localhost:8000"
FLOAT_TOLERANCE = 1e-9
STATUS_MARKER = "\n__HTTP_STATUS__="


class CheckFailedError(Exception):
    """One check did not hold; the message says which and why."""


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise CheckFailedError(f"expected JSON, got {self.body[:200]!r}") from exc


def request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers.get("Content-Type", ""), exc.read())


def wait_ready(base: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = request(base + "/ready", timeout=2.0)
            if reply.status == 200:
                ready: dict[str, Any] = reply.json()
                return ready
            last = f"HTTP {reply.status}: {reply.body[:200]!r}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise CheckFailedError(f"{base}/ready not 200 within {timeout:.0f}s (last: {last})")


def curl_examples(readme: Path) -> list[str]:
    """Shell commands in README code blocks that call curl on localhost:8000."""
    commands: list[str] = []
    in_block = False
    pending = ""
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command.startswith("curl ") and README_HOST in command:
            commands.append(command)
    return commands


def run_curl(command: str, base: str) -> tuple[int, str]:
    """Run one README example against ``base``: HTTP status and body."""
    host = base.split("://", 1)[1]
    argv = shlex.split(command.replace(README_HOST, host))
    if "|" in argv:  # a pipe into a pretty-printer: keep only the request
        argv = argv[: argv.index("|")]
    argv += ["--silent", "--show-error", "--write-out", STATUS_MARKER + "%{http_code}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0 or STATUS_MARKER not in result.stdout:
        raise CheckFailedError(f"curl failed ({result.returncode}): {result.stderr.strip()}")
    body, _, status = result.stdout.rpartition(STATUS_MARKER)
    return int(status), body


def differences(a: Any, b: Any, path: str = "$") -> list[str]:
    """Where two JSON values differ, floats compared within FLOAT_TOLERANCE."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    numbers = isinstance(a, int | float) and isinstance(b, int | float)
    if numbers and (isinstance(a, float) or isinstance(b, float)):
        close = math.isclose(a, b, rel_tol=0.0, abs_tol=FLOAT_TOLERANCE)
        return [] if close else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def probabilities(value: Any) -> list[float]:
    if isinstance(value, dict):
        own = [float(value["probability"])] if isinstance(value.get("probability"), float) else []
        return own + [p for v in value.values() for p in probabilities(v)]
    if isinstance(value, list):
        return [p for v in value for p in probabilities(v)]
    return []


def check_examples(readme: Path, container: str, source: str) -> None:
    examples = curl_examples(readme)
    if not examples:
        raise CheckFailedError(f"no curl example against {README_HOST} found in {readme}")
    compared: list[float] = []
    for command in examples:
        label = " ".join(command.split()[:6])[:90]
        status_c, body_c = run_curl(command, container)
        status_s, body_s = run_curl(command, source)
        if status_c != status_s:
            raise CheckFailedError(f"{label}: container HTTP {status_c}, source HTTP {status_s}")
        if "/metrics" in command:
            print(f"ok   README example, HTTP {status_c} on both: {label}")
            continue
        try:
            json_c, json_s = json.loads(body_c), json.loads(body_s)
        except ValueError:
            if body_c != body_s:
                raise CheckFailedError(f"{label}: bodies differ") from None
            print(f"ok   README example, same text body: {label}")
            continue
        diff = differences(json_c, json_s)
        if diff:
            raise CheckFailedError(f"{label}: container and source disagree: {'; '.join(diff[:5])}")
        probs_c, probs_s = probabilities(json_c), probabilities(json_s)
        compared += [abs(x - y) for x, y in zip(probs_c, probs_s, strict=True)]
        print(
            f"ok   README example, HTTP {status_c}, same answer "
            f"({len(probs_c)} probabilities): {label}"
        )
    if not compared:
        raise CheckFailedError("no README example returned a probability to compare")
    print(
        f"ok   {len(examples)} README examples; {len(compared)} probabilities, "
        f"max |container - source| = {max(compared):.3g}"
    )


PROMETHEUS_SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEInfa]+( [0-9]+)?$")


def check_prometheus_text(reply: Reply, how: str) -> int:
    if reply.status != 200 or not reply.content_type.startswith("text/plain"):
        raise CheckFailedError(f"/metrics {how}: HTTP {reply.status}, {reply.content_type!r}")
    lines = reply.body.decode().splitlines()
    samples = [line for line in lines if line and not line.startswith("#")]
    bad = [line for line in samples if not PROMETHEUS_SAMPLE.match(line)]
    if not samples or bad or not any(line.startswith("# TYPE ") for line in lines):
        raise CheckFailedError(
            f"/metrics {how}: not the Prometheus text format: {bad[:3] or lines[:3]}"
        )
    return len(samples)


def check_metrics(base: str, headers: dict[str, str], name: str) -> None:
    as_json = request(base + "/metrics", headers=headers)
    if as_json.status != 200 or not as_json.content_type.startswith("application/json"):
        raise CheckFailedError(f"{name} /metrics: HTTP {as_json.status}, {as_json.content_type!r}")
    report = as_json.json()
    if not isinstance(report, dict) or not report:
        raise CheckFailedError(f"{name} /metrics: empty JSON report")
    n_query = check_prometheus_text(
        request(base + "/metrics?format=prometheus", headers=headers), "?format=prometheus"
    )
    n_accept = check_prometheus_text(
        request(base + "/metrics", headers={**headers, "Accept": "text/plain"}),
        "Accept: text/plain",
    )
    print(
        f"ok   {name} /metrics: JSON ({len(report)} keys), "
        f"Prometheus text ({n_query} and {n_accept} samples)"
    )


def check_api_key(base: str, api_key: str, body: bytes) -> None:
    json_type = {"Content-Type": "application/json"}
    without = request(base + "/predict", method="POST", body=body, headers=json_type)
    wrong = request(
        base + "/predict", method="POST", body=body, headers={**json_type, "X-API-Key": "x" * 32}
    )
    right = request(
        base + "/predict", method="POST", body=body, headers={**json_type, "X-API-Key": api_key}
    )
    if without.status not in (401, 403) or wrong.status not in (401, 403) or right.status != 200:
        raise CheckFailedError(
            f"API key: without {without.status}, wrong {wrong.status}, right {right.status}"
        )
    print(f"ok   API key enforced: without {without.status}, wrong {wrong.status}, right 200")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True, help="base URL of the container")
    parser.add_argument("--source", help="base URL of the service run from source")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--api-key", help="the key the container was started with")
    parser.add_argument("--expect-model-version", help="the model the container must serve")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for /ready")
    args = parser.parse_args()
    try:
        start = time.monotonic()
        ready = wait_ready(args.container, args.timeout)
        print(f"ok   container ready after {time.monotonic() - start:.1f}s: {ready}")
        headers = {"X-API-Key": args.api_key} if args.api_key else {}
        card = request(args.container + "/model", headers=headers)
        if card.status != 200:
            raise CheckFailedError(f"container /model: HTTP {card.status}")
        version = card.json()["model_version"]
        if args.expect_model_version and version != args.expect_model_version:
            raise CheckFailedError(
                f"container serves {version}, expected {args.expect_model_version}"
            )
        print(f"ok   container serves model {version}")
        if args.source:
            wait_ready(args.source, args.timeout)
            source_version = request(args.source + "/model").json()["model_version"]
            if source_version != version:
                raise CheckFailedError(f"source serves {source_version}, container {version}")
            check_examples(args.readme, args.container, args.source)
            check_metrics(args.source, {}, "source")
        check_metrics(args.container, headers, "container")
        if args.api_key:
            example = curl_examples(args.readme)
            body = json.dumps(_example_patient(example)).encode()
            check_api_key(args.container, args.api_key, body)
    except CheckFailedError as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    return 0


def _example_patient(examples: list[str]) -> Any:
    """The body of the README's first single-patient example."""
    for command in examples:
        argv = shlex.split(command)
        if any(a.endswith("/predict") for a in argv):
            for flag in ("-d", "--data", "--data-raw", "--data-binary"):
                if flag in argv:
                    return json.loads(argv[argv.index(flag) + 1])
    raise CheckFailedError("no README example posts one patient to /predict")


if __name__ == "__main__":
    raise SystemExit(main())
