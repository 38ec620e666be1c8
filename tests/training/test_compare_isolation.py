"""The service never imports Keras (or any deep-learning framework).

Keras and its backends are an optional extra used only by the comparison
command; the service image does not carry them and must not need them. The
check runs in a fresh interpreter with an import hook that records every
attempt to import one of those packages, whether or not it is installed, so
it means the same thing in the main virtualenv (no Keras) and in CI's Keras
virtualenv.
"""

from __future__ import annotations

import json
import sys

from tests._tools import run_ok

FRAMEWORKS = ("keras", "tensorflow", "jax", "jaxlib", "torch")

# Runs in the child: install the recorder, import the given modules (and every
# module of the given packages), then report what was attempted.
CHILD = """
import importlib, json, pkgutil, sys

FRAMEWORKS = set(sys.argv[1].split(","))
attempted = []

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FRAMEWORKS:
            attempted.append(name)
            raise ImportError(f"blocked by the isolation test: {name}")
        return None

sys.meta_path.insert(0, Recorder())
imported = []
for target in sys.argv[2:]:
    if target.startswith("call:"):
        module, _, func = target[5:].rpartition(".")
        try:
            getattr(importlib.import_module(module), func)()
        except ImportError:
            pass
        continue
    package = importlib.import_module(target)
    imported.append(target)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), target + "."):
        if info.name.endswith("__main__"):
            continue  # running it is the CLI, not an import
        importlib.import_module(info.name)
        imported.append(info.name)
print(json.dumps({"attempted": attempted, "imported": imported}))
"""


def attempted_imports(*targets: str) -> dict[str, list[str]]:
    proc = run_ok([sys.executable, "-c", CHILD, ",".join(FRAMEWORKS), *targets])
    result: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_service_and_model_never_try_to_import_a_framework() -> None:
    result = attempted_imports("app", "model")
    assert "app.main" in result["imported"]
    assert "model.predictor" in result["imported"]
    assert result["attempted"] == []


def test_training_and_the_comparison_module_do_not_import_keras_until_asked() -> None:
    result = attempted_imports("training")
    assert "training.compare" in result["imported"]
    assert "training.keras_model" in result["imported"]
    assert result["attempted"] == []


def test_the_recorder_does_catch_a_keras_import() -> None:
    """Control: the hook sees the one place that imports Keras, so the checks above can fail."""
    result = attempted_imports("call:training.keras_model.import_keras")
    assert result["attempted"][:1] == ["keras"]
