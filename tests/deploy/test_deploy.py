"""What ships for deployment: the Dockerfile, the Kubernetes manifests, the scrape config.

The real validators do the heavy lifting (hadolint, kubernetes-validate with
the Kubernetes JSON schemas, promtool); each also gets a deliberately broken
input, so a validator that accepted anything would fail here instead of
passing silently. The remaining tests check what no schema can: that the
pieces agree with each other (selectors, ports, user id, probe paths).
Building and running the image is scripts/container-smoke.sh's job.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests._tools import REPO_ROOT, require_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus.yml"

# The oldest Kubernetes release the manifests support, and a current one; both
# must be among the schemas kubernetes-validate carries (it works offline).
KUBERNETES_VERSIONS = ("1.29.0", "1.34.0")

Manifest = dict[str, Any]


def venv_tool(name: str) -> str:
    """A tool installed by pip into this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return require_tool(name)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def load_all() -> list[Manifest]:
    docs: list[Manifest] = []
    for path in manifest_files():
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def find(kind: str, name: str | None = None) -> Manifest:
    matches = [
        d
        for d in load_all()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def api_container() -> dict[str, Any]:
    containers = find("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        pairs.append((instruction.upper(), args.strip()))
    return pairs


def pyproject() -> dict[str, Any]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    return data


# --- Kubernetes ---------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_kubernetes_schema(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path} is empty"
    for doc in docs:
        # strict: unknown fields (a misspelt key) are errors, as kubectl would refuse them.
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenessProbes={}),
        lambda d: d["spec"].update(replicas="two"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
    ],
    ids=["misspelt-field", "wrong-type", "missing-required"],
)
def test_schema_validation_rejects_broken_deployment(mutate: Any) -> None:
    broken = copy.deepcopy(find("Deployment"))
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_services_select_the_deployment_pods() -> None:
    deployment = find("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in api_container()["ports"]}
    for service in (find("Service", "heart-api"), find("Service", "heart-api-pods")):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
    assert find("Service", "heart-api-pods")["spec"]["clusterIP"] == "None"


def test_autoscaler_and_disruption_budget_target_the_deployment() -> None:
    deployment = find("Deployment")
    hpa = find("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # CPU utilisation is relative to the request: without one the HPA cannot scale.
    assert "cpu" in api_container()["resources"]["requests"]
    pdb = find("PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_deployment_runs_this_version_of_the_image() -> None:
    name, _, tag = api_container()["image"].rpartition(":")
    assert name.rsplit("/", 1)[-1] == "heart-api"
    assert tag == pyproject()["project"]["version"], "bump the image tag with the version"


def test_probes_use_liveness_and_readiness_endpoints() -> None:
    container = api_container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    port_names = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["port"] in port_names
    assert container["readinessProbe"]["httpGet"]["port"] in port_names


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def test_resources_have_requests_within_limits() -> None:
    resources = api_container()["resources"]
    for name in ("cpu", "memory"):
        assert _quantity(resources["requests"][name]) <= _quantity(resources["limits"][name])


def test_pod_runs_as_the_image_user_with_a_read_only_root() -> None:
    pod_security = find("Deployment")["spec"]["template"]["spec"]["securityContext"]
    container_security = api_container()["securityContext"]
    user = [args for instr, args in dockerfile_instructions() if instr == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == int(uid)
    assert pod_security["runAsGroup"] == int(gid or uid)
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"]["drop"] == ["ALL"]


def test_api_key_comes_from_a_secret() -> None:
    env = {e["name"]: e for e in api_container()["env"]}
    key = env["HEART_API_KEY"]
    assert "value" not in key, "the API key must not be written into the manifest"
    assert key["valueFrom"]["secretKeyRef"]["name"]


def test_prometheus_annotations_point_at_the_http_port() -> None:
    annotations = find("Deployment")["spec"]["template"]["metadata"]["annotations"]
    ports = {p["name"]: p["containerPort"] for p in api_container()["ports"]}
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/param_format"] == "prometheus"


def test_environment_variables_are_settings_of_the_service() -> None:
    from app.settings import Settings

    known = {Settings.env_name(name) for name in Settings.model_fields}
    docker_env = " ".join(args for instr, args in dockerfile_instructions() if instr == "ENV")
    image_vars = set(re.findall(r"\b(HEART_[A-Z_]+)=", docker_env))
    pod_vars = {e["name"] for e in api_container()["env"]}
    # A misspelt name would be ignored by the service (with only a warning).
    assert image_vars | pod_vars <= known
    assert {"HEART_MODEL_PATH", "HEART_HOST", "HEART_PORT"} <= image_vars


def test_shutdown_fits_in_the_grace_period() -> None:
    pod = find("Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in api_container()["env"]}
    pre_stop = api_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env["HEART_SHUTDOWN_TIMEOUT"])
    assert int(pre_stop[1]) + drain < pod["terminationGracePeriodSeconds"]


# --- Prometheus ---------------------------------------------------------------


def promtool_check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run(
        [promtool, "check", "config", *extra, str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    result = promtool_check(PROMETHEUS_CONFIG, "--syntax-only")
    assert result.returncode == 0, result.stdout + result.stderr
    # The full check also reads the files the config refers to (the API key):
    # same config, with the key file pointed at one that exists.
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    key_file = tmp_path / "api-key"
    key_file.write_text("k" * 32)
    config["scrape_configs"][0]["authorization"]["credentials_file"] = str(key_file)
    complete = tmp_path / "prometheus.yml"
    complete.write_text(yaml.safe_dump(config))
    result = promtool_check(complete)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_scrape_config(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["scrape_configs"][0]["relabel_configs"][0]["action"] = "keep-if-you-like"
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump(config))
    assert promtool_check(broken, "--syntax-only").returncode != 0


def test_scrape_config_finds_the_pods_and_asks_for_text_format() -> None:
    job = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
    service = find("Service", "heart-api-pods")
    (sd,) = job["dns_sd_configs"]
    assert all(name.split(".")[0] == service["metadata"]["name"] for name in sd["names"])
    assert sd["port"] == service["spec"]["ports"][0]["port"]
    assert job["metrics_path"] == "/metrics"
    assert job["params"] == {"format": ["prometheus"]}


# --- Dockerfile ---------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    hadolint = venv_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    hadolint = venv_tool("hadolint")
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN apt-get install curl\nCMD python -m app\n")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(careless)],
        capture_output=True,
        text=True,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3006", "DL3025"} <= codes  # untagged base image, shell-form CMD


def test_dockerfile_takes_the_base_image_as_a_build_argument() -> None:
    instructions = dockerfile_instructions()
    first_from = next(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    global_args = [args for instr, args in instructions[:first_from] if instr == "ARG"]
    assert "BASE_IMAGE=python:3.12-slim" in global_args
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert all(f.startswith("${BASE_IMAGE}") for f in froms)


def test_runtime_stage_is_non_root_with_healthcheck_and_exec_form() -> None:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    runtime = instructions[last_from:]
    users = [args for instr, args in runtime if instr == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric, non-root id"
    (healthcheck,) = [args for instr, args in runtime if instr == "HEALTHCHECK"]
    assert "/health" in healthcheck and "curl" not in healthcheck and "wget" not in healthcheck
    for instr in ("ENTRYPOINT", "CMD"):
        (args,) = [a for i, a in runtime if i == instr]
        assert isinstance(json.loads(args), list), f"{instr} must use the exec (JSON) form"
    env = " ".join(args for instr, args in runtime if instr == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    assert any(instr == "EXPOSE" for instr, _ in runtime)


def test_image_labels_match_the_project_metadata() -> None:
    instructions = dockerfile_instructions()
    labels = " ".join(args for instr, args in instructions if instr == "LABEL")
    for key in ("title", "version", "source", "licenses", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
    project = pyproject()["project"]
    assert f'org.opencontainers.image.licenses="{project["license"]}"' in labels
    version_args = [args for instr, args in instructions if instr == "ARG" and "VERSION=" in args]
    assert version_args == [f"VERSION={project['version']}"], "ARG VERSION must follow pyproject"


def test_dockerignore_is_an_allow_list_covering_every_copied_path() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start by ignoring everything, then allow what the build reads"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = [
        source.rstrip("/")
        for instr, args in dockerfile_instructions()
        if instr == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert copied and set(copied) <= allowed
    assert not {".venv", "tests", "artifacts", ".git"} & allowed


# --- container scripts --------------------------------------------------------


def test_container_scripts_pass_shellcheck() -> None:
    shellcheck = venv_tool("shellcheck")
    scripts = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "scripts").glob("*.sh"))
    ours = [s for s in scripts if "container" in s or "base-image" in s]
    assert len(ours) >= 3
    result = subprocess.run(
        [shellcheck, "--external-sources", *ours],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_flags_a_careless_script(tmp_path: Path) -> None:
    shellcheck = venv_tool("shellcheck")
    careless = tmp_path / "careless.sh"
    careless.write_text("#!/usr/bin/env bash\ndir=$1\nrm -rf $dir/cache\n")
    result = subprocess.run(
        [shellcheck, "--format", "gcc", str(careless)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "SC2086" in result.stdout
