"""The hardening benchmark's own parts (the benchmark itself runs with make bench-hardening)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from app import probe
from bench import hardening, servers


def test_targets_differ_only_in_what_is_measured() -> None:
    found = hardening.targets()
    assert set(found) == {
        "reference",
        "plain",
        "hardened-uvloop",
        "hardened-asyncio",
        "service",
    }
    plain = found["plain"].options
    assert found["hardened-uvloop"].options[: len(plain)] == plain
    assert found["hardened-asyncio"].options[-2:] == ("--loop", "asyncio")
    assert "serve" in found["service"].command(8123)
    assert all("8123" in t.command(8123) for t in found.values())


def test_cpu_time_of_a_process_tree_counts_the_children() -> None:
    busy = "import time; t = time.process_time(); exec('while time.process_time() - t < 2: pass')"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn])
    try:
        deadline = time.monotonic() + 20
        while len(tree := servers.process_tree(parent.pid)) < 2:
            assert time.monotonic() < deadline, "the child never appeared"
            time.sleep(0.05)
        assert tree[0] == parent.pid
        before = servers.cpu_seconds(*tree)
        parent.wait(60)
    finally:
        parent.kill()
    assert before >= 0
    assert servers.cpu_seconds(os.getpid()) > 0


def test_quantiles_and_failed_probes() -> None:
    summary = probe.health_summary([0.2, float("inf"), 0.1])
    assert summary["health_p50_ms"] == 200.0
    assert summary["health_p99_ms"] is None  # a failed probe
    assert summary["health_failed"] == 1
    assert probe.health_summary([])["health_p50_ms"] is None
