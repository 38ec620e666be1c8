"""The service with one part switched off, to measure what that part costs under load.

``python -m bench.variants VARIANTS [heart-api arguments]`` starts the real
service exactly as ``python -m app`` does (same CLI, uvicorn settings and
logging) after replacing ``app.main.create_app`` with a wrapper that removes
the named parts from the app it builds. Comparing each variant's throughput
with the unmodified service, measured in the same run, tells what each part
costs per request. This is a measuring tool only: nothing here changes the
shipped service.

Variants (comma-separated, or ``none``):

- ``no-access-log``: per-request log line off (the real ``--no-access-log`` setting)
- ``no-metrics``: per-request and per-prediction Prometheus updates become no-ops
- ``no-middleware``: the whole ``ServiceMiddleware`` (request id, checks, metrics, log)
- ``no-telemetry``: FastAPI's per-request check for OpenTelemetry providers skipped
- ``no-model``: ``predict_one`` returns a constant reply instead of running the network
- ``fast-predict``: ``Predictor.probability`` with a scalar path for a single row
- ``coalesced-log``: access lines collected and written once per event-loop turn
  (one ``write`` syscall for all the requests answered in that turn)
- ``gc-freeze``: ``gc.freeze()`` once the app is built, so the cyclic garbage
  collector stops re-scanning the long-lived objects of imports and app set-up
  when a big request (a 1000-patient batch) triggers full collections
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

VARIANTS: Final[tuple[str, ...]] = (
    "no-access-log",
    "no-metrics",
    "no-middleware",
    "no-telemetry",
    "no-model",
    "fast-predict",
    "coalesced-log",
    "gc-freeze",
)


def parse(spec: str) -> list[str]:
    """``'no-metrics,no-model'`` -> the list; ``'none'`` or ``''`` -> empty; unknown -> error."""
    names = [s.strip() for s in spec.split(",") if s.strip() and s.strip() != "none"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return names


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def fast_probability(
    original: Callable[[Any, npt.ArrayLike], npt.NDArray[np.float64]],
) -> Callable[[Any, npt.ArrayLike], npt.NDArray[np.float64]]:
    """``Predictor.probability`` with a single-row path: one ``np.dot``, then plain Python.

    For one row every NumPy call costs ~0.5-1 us of dispatch (more with cold
    caches, as between requests) whatever the size, and the shipped code makes
    about nine of them. Here the first layer is one ``np.dot`` (13 x 8), and
    the 8 hidden units, the output unit and the sigmoid are a short Python loop
    and ``math.tanh``: the same arithmetic, in a different summation order for
    the output unit (differences of the order of 1e-16).
    """
    cache: dict[int, tuple[list[float], list[float]]] = {}

    def probability(self: Any, rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        if isinstance(rows, np.ndarray) and rows.shape == (self.w1.shape[0],):
            key = id(self)
            lists = cache.get(key)
            if lists is None:
                lists = cache[key] = (self.b1.tolist(), self.w2.tolist())
            b1, w2 = lists
            z = self.b2
            for h, b, w in zip(np.dot(rows, self.w1).tolist(), b1, w2, strict=True):
                a = h + b
                if a > 0.0:
                    z += a * w
            return np.array([0.5 + 0.5 * math.tanh(0.5 * z)])
        return original(self, rows)

    return probability


def coalesce_writes(write_line: Callable[[str], object]) -> Callable[[str], None]:
    """Collect lines and hand them to ``write_line`` joined, once per event-loop turn.

    Under load one turn answers many requests, so one syscall carries many
    lines; at concurrency 1 every turn has one line, so nothing waits. Chunks
    stay under PIPE_BUF (4096 bytes) so lines of several workers sharing a pipe
    never interleave.
    """
    pending: list[str] = []

    def flush() -> None:
        chunk: list[str] = []
        chunk_size = 0
        for line in pending:
            if chunk and chunk_size + len(line) > 4096:
                write_line("".join(chunk))
                chunk, chunk_size = [], 0
            chunk.append(line)
            chunk_size += len(line)
        if chunk:
            write_line("".join(chunk))
        pending.clear()

    def write(line: str) -> None:
        if not pending:
            try:
                asyncio.get_running_loop().call_soon(flush)
            except RuntimeError:  # no event loop: write at once
                write_line(line)
                return
        pending.append(line)

    return write


def apply(app: Any, names: Sequence[str]) -> Any:
    """Switch off ``names`` in a freshly built service app (before it serves)."""
    runtime = app.state.runtime
    if "no-metrics" in names:
        for method in ("observe_request", "observe_prediction", "observe_batch"):
            if not hasattr(runtime.metrics, method):
                raise SystemExit(f"ServiceMetrics has no {method}: update bench/variants.py")
            setattr(runtime.metrics, method, _noop)
    if "no-middleware" in names:
        from app.middleware import ServiceMiddleware

        before = len(app.user_middleware)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not ServiceMiddleware]
        if len(app.user_middleware) == before:
            raise SystemExit("ServiceMiddleware not found: update bench/variants.py")
    if "coalesced-log" in names:
        # app.logs writes access lines with sys.stderr.write: give that module (only)
        # a stderr whose write coalesces.
        logs = importlib.import_module("app.logs")
        stderr = SimpleNamespace(write=coalesce_writes(sys.stderr.write))
        setattr(logs, "sys", SimpleNamespace(stderr=stderr))  # noqa: B010 (module global)
    if "gc-freeze" in names:
        gc.collect()
        gc.freeze()
    if "no-telemetry" in names:
        telemetry = getattr(app, "_native_telemetry", None)
        if telemetry is None:
            raise SystemExit("this FastAPI has no native telemetry to switch off")
        telemetry.enabled = lambda: False
    return app


def patch_classes(names: Sequence[str]) -> None:
    """Class-level replacements, made before the app (and its lifespan) exists."""
    if "no-model" in names:
        from app.service import PredictionService

        body = (
            b'{"probability":0.5,"prediction":1,"label":"presence of heart disease",'
            b'"threshold":0.5,"model_version":"constant"}'
        )

        def predict_one(self: Any, row: Any) -> tuple[bytes, int]:
            return body, 1

        PredictionService.predict_one = predict_one  # type: ignore[method-assign]
    if "fast-predict" in names:
        from model.predictor import Predictor

        Predictor.probability = fast_probability(Predictor.probability)  # type: ignore[method-assign,assignment]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit("usage: python -m bench.variants VARIANTS [heart-api arguments]")
    names = parse(args.pop(0))
    if "no-access-log" in names:
        os.environ["HEART_ACCESS_LOG"] = "false"
    patch_classes(names)

    import app.main
    from app.cli import main as cli_main

    original = app.main.create_app

    def create_app(*a: Any, **kw: Any) -> Any:
        return apply(original(*a, **kw), names)

    app.main.create_app = create_app  # uvicorn's factory import finds this one
    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
