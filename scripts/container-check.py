#!/usr/bin/env python3
"""Compare the containerised service with the service run from source, over HTTP.

Called by scripts/container-smoke.sh once both servers are started; standard
library only, so it runs with any python3 >= 3.11 on the host. Checks:

- both become ready and serve the same model version;
- every curl example of the docs' API sections (README.md, docs/api.md) is run by bash as written
  (only localhost:8000 is pointed elsewhere) against both servers, and both
  must answer the same JSON (floats equal within 1e-9; /metrics answers differ
  by nature, so those examples must only succeed); at least one must predict;
- /metrics answers JSON by default and the Prometheus text format for
  ``?format=prometheus`` and for ``Accept: text/plain``;
- with --keyed (the container runs with the HEART_API_KEY of docs/api.md): the
  README's API-key examples answer as shown, and a prediction without the key
  or with a wrong one is refused while the right key is accepted.

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

# This script's folder is on sys.path when it runs: the one parser of the examples.
from readme_examples import API_DOC, EXAMPLE_DOCS, README_HOST, Example, api_key, curl_examples

FLOAT_TOLERANCE = 1e-9


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


def run_example(example: Example, base: str) -> str:
    """Run the example's commands with bash, as written, against ``base``; its output."""
    host = base.split("://", 1)[1]
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", example.command.replace(README_HOST, host)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailedError(f"{label(example)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def label(example: Example) -> str:
    return " ".join(example.command.split()[:4])[:80]


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


def check_examples(examples: list[Example], container: str, source: str) -> None:
    """Same README example, same answer from the container and from the source."""
    compared: list[float] = []
    for example in examples:
        out_c, out_s = run_example(example, container), run_example(example, source)
        if "/metrics" in example.command:  # counters and latencies differ by nature
            print(f"ok   README example ran on both: {label(example)}")
            continue
        json_c, json_s = json.loads(out_c), json.loads(out_s)
        diff = differences(json_c, json_s)
        if diff:
            raise CheckFailedError(
                f"{label(example)}: container and source disagree: {'; '.join(diff[:5])}"
            )
        probs_c, probs_s = probabilities(json_c), probabilities(json_s)
        compared += [abs(x - y) for x, y in zip(probs_c, probs_s, strict=True)]
        print(f"ok   README example, same answer ({len(probs_c)} probabilities): {label(example)}")
    if not compared:
        raise CheckFailedError("no README example returned a probability to compare")
    print(
        f"ok   {len(examples)} README examples; {len(compared)} probabilities, "
        f"max |container - source| = {max(compared):.3g}"
    )


def check_keyed_examples(examples: list[Example], container: str) -> None:
    """The README's API-key examples answer with the fields the README shows."""
    for example in examples:
        answer = json.loads(run_example(example, container))
        shown = json.loads(example.expected) if example.expected_kind == "json" else {}
        missing = [k for k in shown if k != "..." and k not in answer]
        if missing or not shown:
            raise CheckFailedError(f"{label(example)}: answer {answer} lacks README keys {missing}")
        print(f"ok   README API-key example answers as shown: {label(example)}")


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
    # What the shipped Prometheus scrape job sends (deploy/prometheus.yml).
    scrape = request(
        base + "/metrics?format=prometheus", headers={"Authorization": f"Bearer {api_key}"}
    )
    statuses = (without.status, wrong.status, right.status, scrape.status)
    if statuses[0] not in (401, 403) or statuses[1] not in (401, 403) or statuses[2:] != (200, 200):
        raise CheckFailedError(
            "API key: without {}, wrong {}, right {}, bearer scrape {}".format(*statuses)
        )
    print(
        f"ok   API key enforced: without {without.status}, wrong {wrong.status}, right 200, "
        "Prometheus bearer scrape 200"
    )


def example_patient(examples: list[Example]) -> bytes:
    """The body of the README's single-patient /predict example."""
    for example in examples:
        argv = shlex.split(example.command)
        if f"{README_HOST}/predict" in argv and "-d" in argv:
            return argv[argv.index("-d") + 1].encode()
    raise CheckFailedError("no README example posts one patient to /predict")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True, help="base URL of the container")
    parser.add_argument("--source", help="base URL of the service run from source")
    parser.add_argument(
        "--doc",
        dest="docs",
        type=Path,
        action="append",
        help="a document whose API sections hold curl examples (repeatable; default: "
        "README.md and docs/api.md)",
    )
    parser.add_argument(
        "--keyed",
        action="store_true",
        help="the container was started with the HEART_API_KEY of docs/api.md: check the key",
    )
    parser.add_argument("--expect-model-version", help="the model the container must serve")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for /ready")
    args = parser.parse_args()
    try:
        docs = args.docs or list(EXAMPLE_DOCS)
        examples = curl_examples(*docs)
        if not examples:
            raise CheckFailedError(f"no curl example against {README_HOST} in {docs}")
        key = api_key(API_DOC) if args.keyed else None
        if args.keyed and not key:
            raise CheckFailedError(f"{API_DOC} shows no `HEART_API_KEY=... heart-api serve`")
        headers = {"X-API-Key": key} if key else {}

        start = time.monotonic()
        ready = wait_ready(args.container, args.timeout)
        print(f"ok   container ready after {time.monotonic() - start:.1f}s: {ready}")
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
            check_examples([e for e in examples if not e.needs_key], args.container, args.source)
            check_metrics(args.source, {}, "source")
        check_metrics(args.container, headers, "container")
        if key:
            check_keyed_examples([e for e in examples if e.needs_key], args.container)
            check_api_key(args.container, key, example_patient(examples))
    except (CheckFailedError, ValueError) as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
