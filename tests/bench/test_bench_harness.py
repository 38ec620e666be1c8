"""The benchmark harness computes what it claims: wrk parsing, medians, ratios, tables.

No test here times anything: speed figures live in bench/ results, never in
assertions. These tests make sure the code that produces those figures reads
wrk's output correctly and does the arithmetic right.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from app.testing import service_environment
from bench import load, report, servers, wrk
from training.report import markdown_table

# Real wrk 4.1 output (bench/post.lua, --latency) captured on the development machine.
WRK_OK = """\
Running 3s test @ http://127.0.0.1:18101/predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.41ms    1.89ms  13.77ms   76.55%
    Req/Sec    14.05k     0.87k   16.28k    76.67%
  Latency Distribution
     50%    1.88ms
     75%    3.55ms
     90%    4.77ms
     99%    7.80ms
  41927 requests in 3.00s, 9.60MB read
Requests/sec:  13969.97
Transfer/sec:      3.20MB
WRK_JSON {"duration_us":3001223,"requests":41927,"bytes":10062480,"errors":{"connect":0,\
"read":0,"write":0,"status":0,"timeout":0},"latency_us":{"min":159,"mean":2405.420,\
"stdev":1887.923,"max":13774,"p50":1879,"p75":3546,"p90":4769,"p99":7804,"p99_9":10281}}
"""

WRK_422 = """\
Running 2s test @ http://127.0.0.1:18102/predict
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50ms  740.14us   7.98ms   93.78%
    Req/Sec     2.75k    97.45     2.90k    71.43%
  Latency Distribution
     50%    1.08ms
     75%    2.06ms
     90%    2.14ms
     99%    4.75ms
  5741 requests in 2.10s, 7.54MB read
  Non-2xx or 3xx responses: 5741
Requests/sec:   2733.95
Transfer/sec:      3.59MB
WRK_JSON {"duration_us":2099892,"requests":5741,"bytes":7905357,"errors":{"connect":0,\
"read":0,"write":0,"status":5741,"timeout":0},"latency_us":{"min":488,"mean":1504.420,\
"stdev":740.139,"max":7983,"p50":1075,"p75":2064,"p90":2141,"p99":4747,"p99_9":6678}}
"""


# ---------------------------------------------------------------- wrk output


def test_parse_output_prefers_exact_json_line() -> None:
    result = wrk.parse_output(WRK_OK)
    assert result.requests == 41927
    assert result.duration_s == pytest.approx(3.001223)
    assert result.requests_per_s == pytest.approx(41927 / 3.001223)
    assert result.latency_us["p50"] == 1879
    assert result.latency_us["p99"] == 7804
    assert result.latency_us["p99_9"] == 10281
    assert result.error_count == 0


def test_http_errors_are_counted() -> None:
    result = wrk.parse_output(WRK_422)
    assert result.errors["status"] == 5741
    assert result.error_count == 5741


def test_unreadable_output_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_build_command_pins_and_passes_script_arguments(tmp_path: Path) -> None:
    body = tmp_path / "b.jsonl"
    argv = wrk.build_command(
        "http://127.0.0.1:1/predict",
        body,
        connections=32,
        duration_s=10,
        cpus=(1,),
        stop_after=500,
    )
    assert argv[:3] == ["taskset", "-c", "1"]
    assert "-c32" in argv and "-d10s" in argv and "--latency" in argv
    assert argv[argv.index("-s") + 1] == str(wrk.LUA_SCRIPT)
    assert argv[argv.index("--") + 1 :] == [str(body), "500"]


def test_build_command_never_asks_for_more_threads_than_connections(tmp_path: Path) -> None:
    argv = wrk.build_command("http://x/", tmp_path / "b", connections=1, duration_s=1, threads=4)
    assert "-t1" in argv and "taskset" not in argv


# ---------------------------------------------------------------- statistics


def test_summarize_median_min_max_and_spread() -> None:
    s = report.summarize([3.0, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    assert s["spread"] == pytest.approx(9.0 / 2.5)


def test_summarize_ignores_nan_and_handles_empty() -> None:
    assert report.summarize([math.nan, 4.0, 6.0, 5.0])["median"] == 5.0
    empty = report.summarize([math.nan])
    assert empty["n"] == 0 and math.isnan(empty["median"]) and math.isnan(empty["spread"])


def test_ratio() -> None:
    assert report.ratio(7.0, 10.0) == pytest.approx(0.7)
    assert math.isnan(report.ratio(1.0, 0.0))
    assert math.isnan(report.ratio(math.nan, 1.0))


# ---------------------------------------------------------------- reports


def test_markdown_table_and_number_formats() -> None:
    text = markdown_table(["a", "b"], [["1", "2"], ["3", "4"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])
    assert report.number(12345.6) == "12,346"
    assert report.number(math.nan) == "n/a"
    assert report.milliseconds(460.0) == "0.460 ms"
    assert report.milliseconds(8700.0) == "8.70 ms"
    assert report.milliseconds(39000.0) == "39.0 ms"
    assert report.times(0.7412) == "0.74x"
    assert report.duration(5.2e-6) == "5.2 us"
    assert report.duration(0.22) == "220 ms"


def test_results_files_store_nan_as_null(tmp_path: Path) -> None:
    md, js = report.write_results("x", "# title", {"a": math.nan, "b": [1.5]}, tmp_path)
    assert md.read_text() == "# title\n"
    assert json.loads(js.read_text()) == {"a": None, "b": [1.5]}
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- load report logic


def entry(target: str, endpoint: str, c: int, rps: float, p99: float) -> dict[str, object]:
    run = {
        "requests_per_s": rps,
        "latency_us": {"p50": p99 / 2, "p99": p99},
        "server_cpu_us_per_request": 100.0,
        "other_load_cores": 0.0,
        "errors": {"status": 0},
    }
    summary = report.summarize_runs([run], 1000 if endpoint == "batch" else 1)
    return {"target": target, "endpoint": endpoint, "connections": c, **summary}


def results_fixture(
    service_c32: float, service_c1_p99: float, batch_rps: float
) -> dict[str, object]:
    items = [
        entry("asgi", "predict", 1, 8000, 300),
        entry("asgi", "predict", 32, 28000, 2400),
        entry("fastapi", "predict", 1, 4000, 500),
        entry("fastapi", "predict", 32, 6800, 8700),
        entry("service", "predict", 1, 3500, service_c1_p99),
        entry("service", "predict", 32, service_c32, 10000),
        entry("service", "batch", 4, batch_rps, 40000),
    ]
    return {f"{e['target']}/{e['endpoint']}/c{e['connections']}": e for e in items}


def test_batch_rows_per_second_multiplies_by_batch_size() -> None:
    e = entry("service", "batch", 4, 310.0, 1.0)
    assert e["rows_per_s"]["median"] == pytest.approx(310_000.0)  # type: ignore[index]


def test_scenarios_cover_both_concurrencies_and_batch_for_frameworks(tmp_path: Path) -> None:
    settings = load.Settings()
    found = [
        servers.Target("asgi", "", app="bench.references:raw_asgi"),
        servers.Target("fastapi", "", app="bench.references:fastapi_app"),
        servers.Target("service", ""),
    ]
    scenarios = wrk.standard_scenarios(tmp_path, settings.batch_size)
    keys = [run.key for run in load.plan_runs(found, scenarios, settings)]
    assert keys == [
        "asgi/predict/c1",
        "asgi/predict/c32",
        "fastapi/predict/c1",
        "fastapi/predict/c32",
        "fastapi/batch/c4",
        "service/predict/c1",
        "service/predict/c32",
        "service/batch/c4",
        "service/oip/c4",  # the same batches through the Open Inference Protocol
    ]


def test_extra_scenarios_go_to_the_service_only(tmp_path: Path) -> None:
    settings = load.Settings()
    bodies = wrk.write_single_bodies(tmp_path / "p.jsonl")
    [explain] = load.extra_scenarios([["explain", "/predict?explain=true", str(bodies)]])
    assert explain.service_only and explain.bodies == bodies.resolve()
    found = [
        servers.Target("fastapi", "", app="bench.references:fastapi_app"),
        servers.Target("s", ""),
    ]
    keys = [run.key for run in load.plan_runs(found, [explain], settings)]
    assert keys == ["s/explain/c1", "s/explain/c32"]
    for bad in (["predict", "/predict", str(bodies)], ["x", "predict", str(bodies)]):
        with pytest.raises(SystemExit, match="--scenario"):
            load.extra_scenarios([bad])
    with pytest.raises(SystemExit, match="body file"):
        load.extra_scenarios([["x", "/predict", str(tmp_path / "missing.jsonl")]])


def test_extra_scenario_rows_name_their_path() -> None:
    results = results_fixture(service_c32=5000, service_c1_p99=700, batch_rps=320)
    extra = entry("service", "explain", 1, 3000, 900)
    results["service/explain/c1"] = {**extra, "path": "/predict?explain=true"}
    text = report.comparison_table(results, {"service": "the service"})
    assert "| the service | /predict?explain=true (explain) | 1 | 3,000 |" in text
    assert "| the service | /predict/batch | 4 | 320 | 320,000 |" in text


def test_table_uploads_are_compared_with_the_json_batch_of_the_same_run() -> None:
    def run(rows_per_request: int, rps: float, cpu_us: float) -> dict[str, object]:
        sample = {
            "requests_per_s": rps,
            "latency_us": {"p50": 1.0, "p99": 2.0},
            "server_cpu_us_per_request": cpu_us,
            "other_load_cores": 0.0,
            "errors": {"status": 0},
        }
        return report.summarize_runs([sample], rows_per_request)

    results = {
        "service/batch/c2": {"target": "service", "endpoint": "batch", "connections": 2}
        | {"path": "/predict/batch", "rows_per_request": 1000}
        | run(1000, 100.0, 5000.0),
        "service/table-arrow/c2": {"target": "service", "endpoint": "table-arrow"}
        | {"connections": 2, "path": "/predict/table", "rows_per_request": 16_000}
        | run(16_000, 50.0, 8000.0),
    }
    heading, table = load.tables(results)
    assert "c=2; 16,000 rows per upload, 1,000 per JSON batch" in heading
    # 800,000 vs 100,000 rows/s; 2,000,000 vs 200,000 rows per worker CPU-second
    assert "| table-arrow | 800,000 | 8.00x | 2,000,000 | 10.00x |" in table
    assert load.tables({"service/batch/c2": results["service/batch/c2"]}) == []


def test_memory_section_shows_each_workers_growth_between_rounds() -> None:
    def rounds(*rss_kib: int) -> list[dict[str, int]]:
        return [{"requests": 1000, "warmup_requests": 100, "rss_kib": kib} for kib in rss_kib]

    results = {
        "asgi/predict/c1": {"target": "asgi", "runs": rounds(10240, 10240, 10240)},
        "service/predict/c1": {"target": "service", "runs": rounds(70000, 71000, 72000)},
        "service/batch/c4": {"target": "service", "runs": rounds(71680, 71680, 73728)},
    }
    heading, table = load.memory(results, {"service": "the service"})
    assert "VmRSS after each round" in heading
    lines = table.splitlines()
    assert lines[0] == "| server | after round 1 | after round 2 | after round 3 | last / first |"
    assert lines[2] == (
        "| asgi | 10.0 MiB (1,100 requests) | 10.0 MiB (2,200 requests) "
        "| 10.0 MiB (3,300 requests) | 1.00x |"
    )
    # the largest of the worker's runs in each round; requests of all its runs so far
    assert lines[3] == (
        "| the service | 70.0 MiB (2,200 requests) | 70.0 MiB (4,400 requests) "
        "| 72.0 MiB (6,600 requests) | 1.03x |"
    )


def test_only_names_a_scenario_before_any_server_starts(
    artifact_path: Path, tmp_path: Path
) -> None:
    argv = ["--artifact", str(artifact_path), "--only", "nope", "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="--only nope: no such scenario"):
        load.main(argv)
    assert not list(tmp_path.iterdir())


def test_server_environment_drops_developer_heart_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEART_ACCESS_LOG", "false")
    env = service_environment(Path("/m.joblib"))
    assert env["HEART_MODEL_PATH"] == "/m.joblib"
    assert "HEART_ACCESS_LOG" not in env


# ---------------------------------------------------------------- processes and memory


def test_status_kib_reads_proc_status_fields() -> None:
    text = "Name:\tpython\nVmHWM:\t   61234 kB\nVmRSS:\t   60000 kB\nThreads:\t3\n"
    assert servers.status_kib(text, "VmRSS") == 60000
    assert servers.status_kib(text, "VmHWM") == 61234
    with pytest.raises(servers.ServerError):
        servers.status_kib(text, "VmSwap")


def test_own_process_is_its_own_worker_and_has_rss() -> None:
    assert servers.worker_pids(os.getpid()) == [os.getpid()]
    assert servers.status_kib(Path(f"/proc/{os.getpid()}/status").read_text(), "VmRSS") > 1000


def test_pinned_prefixes_taskset_only_when_asked() -> None:
    assert servers.pinned(["x"], None) == ["x"]
    assert servers.pinned(["x"], (0, 1)) == ["taskset", "-c", "0,1", "x"]
    assert servers.pinned(["x"], (1,), nice=-5) == ["taskset", "-c", "1", "nice", "-n", "-5", "x"]


# ---------------------------------------------------------------- payloads and reference apps


def test_bodies_are_valid_patients_for_the_service_schema(tmp_path: Path) -> None:
    schemas = pytest.importorskip("app.schemas")
    path = wrk.write_single_bodies(tmp_path / "p.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 270
    for line in lines:
        schemas.PatientFeatures.model_validate_json(line)
    batch = wrk.write_batch_bodies(tmp_path / "b.jsonl", batch_size=1000, n_bodies=2)
    bodies = batch.read_text().splitlines()
    assert len(bodies) == 2 and bodies[0] != bodies[1]
    assert len(schemas.BatchRequest.model_validate_json(bodies[0]).patients) == 1000


def test_raw_asgi_reference_drains_body_and_replies_constant_json() -> None:
    import asyncio

    from bench import references

    chunks = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return chunks.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(references.raw_asgi({"type": "http"}, receive, send))  # type: ignore[arg-type]
    assert not chunks
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["label"] == "presence of heart disease"  # type: ignore[arg-type]


def test_fastapi_reference_validates_with_the_service_model() -> None:
    pytest.importorskip("app.schemas")
    from fastapi.testclient import TestClient

    from bench import references

    client = TestClient(references.fastapi_app)
    patient = wrk.patients(1)[0]
    assert client.post("/predict", json=patient).json() == references.CONSTANT
    bad = client.post("/predict", json={**patient, "thal": 4})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "thal"]
    batch = client.post("/predict/batch", json={"patients": wrk.patients(3)})
    assert len(batch.json()["predictions"]) == 3
    stricter = TestClient(references.fastapi_bytes).post("/predict", json=patient)
    assert stricter.json() == references.CONSTANT
    assert stricter.headers["content-type"] == "application/json"


# ---------------------------------------------------------------- the real tools, end to end


@pytest.mark.e2e
def test_wrk_and_lua_script_against_the_raw_asgi_reference(tmp_path: Path) -> None:
    from tests._tools import require_tool

    require_tool("wrk")
    bodies = wrk.write_single_bodies(tmp_path / "p.jsonl")
    target = servers.Target("asgi", "reference 1", app="bench.references:raw_asgi", ready_path="/")
    with servers.started(target, tmp_path / "unused.joblib", tmp_path, cpus=None) as server:
        result = wrk.run(server.url("/predict"), bodies, connections=2, duration_s=1)
        assert result.requests > 0 and result.error_count == 0
        assert 0 < result.latency_us["p50"] <= result.latency_us["p99"]
        counted = wrk.run(
            server.url("/predict"), bodies, connections=1, duration_s=1, stop_after=50
        )
        assert counted.requests == 50
        log = tmp_path / "wrk.log"
        run = wrk.measure(
            server, "/predict", bodies, warmup_s=0.5, log=log, connections=2, duration_s=1
        )
        assert run["warmup_requests"] > 0 and run["requests"] > 0
        assert not any(run["errors"].values())
        assert run["server_cpu_us_per_request"] > 0
        assert "WRK_JSON" in log.read_text()


@pytest.mark.e2e
def test_service_target_starts_pinned_through_app_testing(
    artifact_path: Path, tmp_path: Path
) -> None:
    """The benchmark's service is `python -m app serve`, pinned, measured from /proc."""
    from tests._tools import require_tool

    require_tool("taskset")
    core = max(os.sched_getaffinity(0))
    service = servers.Target("service", "the service as shipped")
    with servers.started(service, artifact_path, tmp_path, cpus=(core,)) as server:
        # One worker, spawned by the supervisor (app/supervisor.py) that taskset exec'd.
        [pid] = server.workers()
        assert pid != server.running.process.pid
        assert os.sched_getaffinity(server.running.process.pid) == {core}
        assert os.sched_getaffinity(pid) == {core}  # inherited
        assert server.rss_kib() > 10_000
        load.preflight(server, wrk.standard_scenarios(tmp_path, batch_size=3))
        assert servers.cpu_seconds(pid) > 0
        process = server.running.process
    assert process.poll() is not None  # stopped on leaving the block


# ---------------------------------------------------------------- profile attribution


FOLDED = """\
<module> (app/__main__.py);run (uvicorn/main.py);Runner.run (asyncio/runners.py);read (libc.so.6) 5
<module> (app/__main__.py);run (uvicorn/main.py);__call__ (app/middleware.py);\
app (fastapi/routing.py);predict (app/routes.py);Predictor.probability (model/predictor.py);\
PyArray_MatrixProduct2 (numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so) 3
<module> (app/__main__.py);run (uvicorn/main.py);__call__ (app/middleware.py);\
AccessLog.write (app/logs.py);_PyEval_EvalFrameDefault (libpython3.11.so.1.0) 2
"""


def test_profile_attribution_self_and_inclusive() -> None:
    from bench import profile_service as ps

    stacks = ps.parse_folded(FOLDED.splitlines())
    assert [count for _, count in stacks] == [5, 3, 2]
    att = ps.attribute(stacks)
    assert att.total == 10
    # interpreter frames (libpython) count towards the Python function that called them
    assert att.self_samples == {"kernel/libc (syscalls)": 5, "predictor + NumPy": 3, "logging": 2}
    assert att.inclusive["our middleware"] == 5
    assert att.inclusive["our handler"] == 3
    assert att.inclusive["uvicorn + HTTP parser"] == 10
    assert att.top_functions[0] == ("Runner.run (asyncio/runners.py)", 5)


def test_profile_markdown_splits_cpu_time_by_share() -> None:
    from bench import profile_service as ps

    att = ps.attribute(ps.parse_folded(FOLDED.splitlines()))
    text = "\n".join(ps.to_markdown(att, cpu_us_per_request=200.0))
    assert "| predictor + NumPy | 3 | 30.0% | 60.0 |" in text


def test_comparison_rows_carry_their_ratio_to_the_base_measured_in_the_same_run() -> None:
    results = results_fixture(service_c32=5000, service_c1_p99=700, batch_rps=320)
    lines = report.comparison_table(results, {}).splitlines()
    assert lines[0].endswith("| req/s vs fastapi |")
    service_c32 = next(line for line in lines if line.startswith("| service | /predict | 32 |"))
    assert service_c32.endswith("| 0.74x |")  # 5,000 / 6,800 req/s of reference 2 at c=32
    batch = next(line for line in lines if line.startswith("| service | /predict/batch |"))
    assert batch.endswith("| n/a |")  # the fixture has no reference-2 batch run
    against_asgi = report.comparison_table(results, {}, base="asgi").splitlines()
    assert against_asgi[0].endswith("| req/s vs asgi |")
    assert "| service | /predict | 32 |" in against_asgi[7] and against_asgi[7].endswith(
        "| 0.18x |"
    )


def test_scenario_headers_reach_the_wrk_command_line(tmp_path: Path) -> None:
    bodies = wrk.write_single_bodies(tmp_path / "p.jsonl")
    spec = [["gzip", "/predict", str(bodies)]]
    [gz] = load.extra_scenarios(spec, [["gzip", "Accept-Encoding: gzip, deflate"]])
    assert gz.headers == ("Accept-Encoding: gzip, deflate",)
    argv = wrk.build_command("http://x/", bodies, connections=1, duration_s=1, headers=gz.headers)
    assert argv[argv.index("-H") + 1] == "Accept-Encoding: gzip, deflate"
    with pytest.raises(SystemExit, match="no --scenario of that name"):
        load.extra_scenarios(spec, [["other", "Accept-Encoding: gzip"]])
    with pytest.raises(SystemExit, match="wants 'Name: value'"):
        load.extra_scenarios(spec, [["gzip", "gzip"]])


@pytest.mark.e2e
def test_post_lua_sends_wrks_extra_headers_with_every_body(tmp_path: Path) -> None:
    """wrk.format() drops wrk's -H headers when handed a headers table, so a scenario's
    Accept-Encoding was never sent: the measured request was not the one named."""
    import http.server
    import threading

    from tests._tools import require_tool

    require_tool("wrk")
    seen: list[tuple[str | None, str | None]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers["Accept-Encoding"], self.headers["Content-Type"]))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/predict"
        bodies = wrk.write_single_bodies(tmp_path / "p.jsonl")
        result = wrk.run(
            url,
            bodies,
            connections=1,
            duration_s=1,
            stop_after=5,
            headers=["Accept-Encoding: gzip"],
        )
    finally:
        server.shutdown()
    assert result.requests >= 5
    assert set(seen) == {("gzip", "application/json")}


def test_the_quoted_command_pastes_back_into_a_shell() -> None:
    """It was joined with spaces, so a header argument came out as three words."""
    from bench.report import command_line

    line = command_line("bench.load", ["--scenario-header", "gz", "Accept-Encoding: gzip"])
    assert line == "python -m bench.load --scenario-header gz 'Accept-Encoding: gzip'"
    assert command_line("bench.load", ["--rounds", "3"]) == "python -m bench.load --rounds 3"
