"""The streaming services against real Tansu + SeaweedFS (+ Triton): same files as the batch CLI."""

from __future__ import annotations

import math
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plankline.batch.run import run_batch
from plankline.config import BatchSettings, PipelineSettings
from plankline.imaging.synth import write_synth_video
from plankline.model.infer import read_classification_csv
from plankline.stream import contracts, stack
from plankline.stream.runner import Runner, ensure_topics
from plankline.stream.settings import ServiceSettings
from plankline.stream.stack import ServerHandle
from plankline.stream.store import S3Store

pytestmark = pytest.mark.integration

SMALL = {"height": 256, "width": 384, "density": 12.0, "size_range": (8.0, 90.0)}
VIDEOS = {"20260101120000.000.avi": ("rawvideo", 10), "20260101120010.000.avi": ("ffv1", 7)}
CHUNK_FRAMES = 4
FPS = 10.0
SERVICES = {
    "segmenter": ("plankline.stream.segmenter", [contracts.TOPIC_CHUNKS]),
    "measurer": ("plankline.stream.measurer", [contracts.TOPIC_ROIS]),
    "classifier": ("plankline.stream.classifier", [contracts.TOPIC_ROIS]),
    "collector": (
        "plankline.stream.collector",
        [contracts.TOPIC_MEASUREMENTS, contracts.TOPIC_CLASSIFICATIONS],
    ),
}
CREDENTIALS: dict[str, tuple[str, str]] = {}  # S3 endpoint -> keys, for the services' settings


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def kafka(stack_dir: Path) -> Iterator[ServerHandle]:
    """A fresh Tansu broker per test (memory engine): no other test's messages."""
    try:
        stack.tansu_binary()
    except FileNotFoundError as error:
        pytest.skip(f"Tansu binary missing: {error}")
    server = stack.start_tansu(stack_dir, name=f"tansu-{uuid.uuid4().hex[:6]}")
    ensure_topics(server.endpoint, {t: 2 for t in contracts.TOPICS})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small synthetic videos: uncompressed and FFV1."""
    folder = tmp_path_factory.mktemp("raw") / "raw"
    folder.mkdir()
    for i, (name, (codec, frames)) in enumerate(VIDEOS.items()):
        write_synth_video(folder / name, frames, seed=10 + i, codec=codec, fps=FPS, **SMALL)
    return folder


@pytest.fixture(scope="module")
def batch_project(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same videos through the batch pipeline, same settings."""
    project = tmp_path_factory.mktemp("batch")
    (project / "raw").mkdir()
    for video in raw.iterdir():
        if video.suffix == ".avi":
            (project / "raw" / video.name).symlink_to(video)
    report = run_batch(
        BatchSettings(project=project, chunk_frames=CHUNK_FRAMES, workers=1, fps=FPS)
    )
    assert report.failures == []
    return project


def service_settings(name: str, kafka: ServerHandle, store: S3Store, **kw: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "service_name": name,
        "group_id": name,
        "input_topics": SERVICES[name][1],
        "bootstrap_servers": kafka.endpoint,
        "s3_endpoint": store.endpoint,
        "s3_access_key": CREDENTIALS[store.endpoint][0],
        "s3_secret_key": CREDENTIALS[store.endpoint][1],
        "s3_bucket": store.bucket,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "backoff_initial_s": 0.05,
        "max_attempts": 2,
        "http_port": 0,
        "poll_timeout_ms": 100,
    }
    values.update(kw)
    return ServiceSettings(**values)


@contextmanager
def services(
    kafka: ServerHandle,
    store: S3Store,
    names: tuple[str, ...] = tuple(SERVICES),
    pause_after_first: dict[str, float] | None = None,
    fail_on_chunk: dict[str, int] | None = None,
    **kw: Any,
) -> Iterator[dict[str, Runner]]:
    """The services as runners in threads of this process (stopped on exit).

    ``pause_after_first``: service -> seconds it pauses after its first writes, before
    produce+commit; ``fail_on_chunk``: service -> chunk index on which it raises (see
    ``stream_service_wrappers``).
    """
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stream_service_wrappers import FailOnChunk, PauseAfterFirst

    runners: dict[str, Runner] = {}
    threads = []
    for replica, name in enumerate(names):
        module = importlib.import_module(SERVICES[name][0])
        settings = service_settings(name, kafka, store, **kw)
        handler = {
            "segmenter": "Segmenter",
            "measurer": "Measurer",
            "classifier": "ClassifierService",
            "collector": "Collector",
        }[name]
        service = getattr(module, handler)(settings)
        if pause_after_first and name in pause_after_first:
            service = PauseAfterFirst(service)
            service.pause_s = pause_after_first[name]
        if fail_on_chunk and name in fail_on_chunk:
            service = FailOnChunk(service, fail_on_chunk[name])
        runner = Runner(service, settings)
        runners[name if name not in runners else f"{name}-{replica}"] = runner
        thread = threading.Thread(target=runner.run, name=name, daemon=True)
        thread.start()
        threads.append(thread)
    try:
        yield runners
    finally:
        for runner in runners.values():
            runner.request_stop()
        for thread in threads:
            thread.join(timeout=30)


def submit(
    raw: Path, job: str, store: S3Store, kafka: ServerHandle, pattern: str = "*.avi"
) -> None:
    from plankline.stream.ingest import submit as ingest

    videos = sorted(p for p in raw.glob(pattern) if not p.name.endswith(".truth.csv"))
    settings = PipelineSettings(chunk_frames=CHUNK_FRAMES, fps=FPS)
    report = ingest(videos, job, settings, store, kafka.endpoint)
    assert report.failures == [] or all("20260101" in f for f in report.failures)


def wait_finished(store: S3Store, job: str, timeout_s: float = 120.0) -> Any:
    from plankline.stream.results import job_status

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job_status(store, job)
        if status.finished:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} not finished after {timeout_s} s: {job_status(store, job)}")


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def assert_same_outputs(stream_dir: Path, batch_dir: Path, prob_atol: float = 0.0) -> int:
    """Stream results equal batch outputs; returns the number of ROIs compared."""
    n_rois = 0
    names = sorted(p.name for p in (batch_dir / "measurements").glob("*.csv"))
    assert names and names == sorted(p.name for p in (stream_dir / "measurements").glob("*.csv"))
    for name in names:
        stem = name[: -len(".csv")]
        tar = (batch_dir / "segmentation" / f"{stem}.tar").read_bytes()
        assert (stream_dir / "segmentation" / f"{stem}.tar").read_bytes() == tar, f"{stem}: ROI tar"
        n_rois += len(tar_members(batch_dir / "segmentation" / f"{stem}.tar"))
        assert (stream_dir / "measurements" / name).read_bytes() == (
            batch_dir / "measurements" / name
        ).read_bytes(), f"{stem}: measurements differ"
        ids_a, probs_a, classes_a = read_classification_csv(stream_dir / "classification" / name)
        ids_b, probs_b, classes_b = read_classification_csv(batch_dir / "classification" / name)
        assert ids_a == ids_b and classes_a == classes_b
        np.testing.assert_allclose(probs_a, probs_b, rtol=0, atol=max(prob_atol, 1e-7))
        if prob_atol == 0.0:
            assert (stream_dir / "ecotaxa" / f"{stem}.zip").read_bytes() == (
                batch_dir / "ecotaxa" / f"{stem}.zip"
            ).read_bytes(), f"{stem}: EcoTaxa export differs"
    return n_rois


def fresh_store(s3_server: ServerHandle, name: str, retries: int = 3) -> S3Store:
    store = S3Store(
        s3_server.endpoint,
        s3_server.extra["access_key"],
        s3_server.extra["secret_key"],
        f"svc-{name}-{uuid.uuid4().hex[:6]}",
        retries=retries,
    )
    store.ensure_bucket()
    CREDENTIALS[store.endpoint] = (s3_server.extra["access_key"], s3_server.extra["secret_key"])
    return store


# ---------------------------------------------------------------------------- tests


def test_services_give_the_batch_cli_outputs_for_the_same_videos(
    raw: Path, batch_project: Path, kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    from plankline.stream.results import download_results, job_status

    store = fresh_store(s3_server, "same")
    with services(kafka, store):
        submit(raw, "same", store, kafka)
        status = wait_finished(store, "same")
    assert status.planned == 3 + 2 and status.failed == {}
    from plankline.stream.ingest import submit as ingest

    videos = sorted(raw.glob("*.avi"))
    settings = PipelineSettings(chunk_frames=CHUNK_FRAMES, fps=FPS)
    again = ingest(videos, "same", settings, store, kafka.endpoint)
    assert (again.chunks, again.skipped) == (0, 5)  # idempotent: done chunks are not re-sent
    with pytest.raises(ValueError, match="chunk_frames"):
        ingest(videos, "same", PipelineSettings(chunk_frames=3, fps=FPS), store, kafka.endpoint)
    download_results(store, "same", tmp_path / "out")
    n = assert_same_outputs(tmp_path / "out", batch_project)
    assert n > 20 and status.rois == n
    assert job_status(store, "same").done == 5
    assert_same_summary(tmp_path / "out", batch_project)


def assert_same_summary(stream_dir: Path, batch_dir: Path) -> None:
    """summary/ equals batch's: counts per class per second byte for byte, chunks.csv but
    for the processing time."""
    from plankline.outputs.tables import read_csv

    counts = (stream_dir / "summary" / "counts_per_second.csv").read_bytes()
    assert counts == (batch_dir / "summary" / "counts_per_second.csv").read_bytes()
    assert len(counts.splitlines()) > 5  # header + several (second, class) rows
    a = read_csv(stream_dir / "summary" / "chunks.csv", dtypes={"chunk": str})
    b = read_csv(batch_dir / "summary" / "chunks.csv", dtypes={"chunk": str})
    assert list(a) == list(b)
    for column in set(b) - {"seconds_to_process"}:
        assert list(a[column]) == list(b[column]), column


def test_a_chunk_dead_lettered_downstream_is_reported_failed_not_pending(
    raw: Path, batch_project: Path, kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    """A bug in the measurer on one chunk: dead-lettered, marked failed; the job finishes."""
    from plankline.stream.results import download_results

    store = fresh_store(s3_server, "bug")
    with services(kafka, store, fail_on_chunk={"measurer": 1}) as runners:
        submit(raw, "bug", store, kafka, pattern="20260101120000.000.avi")
        status = wait_finished(store, "bug", timeout_s=60)
    assert runners["measurer"].stats.dead_lettered == 1
    assert (status.planned, status.done, status.pending) == (3, 2, 0)
    ((name, error),) = status.failed.items()
    assert name == "20260101120000.400"  # chunk 1: frames 4-7 at 10 fps
    assert error.startswith("measurer gave up after 2 attempt(s): RuntimeError: injected bug")
    (letter,) = read_dead_letters(kafka.endpoint, 1)
    assert letter.service == "measurer" and "injected bug" in letter.error
    # one failure record: failed.json is the dead letter (less the input bytes) + the chunk
    import json

    key = contracts.chunk_key("bug", "20260101120000.000", 1, "failed.json")
    record = json.loads(store.get_bytes(key))
    assert record["detail"] == letter.error and record["outputs_follow"] is False
    assert (record["service"], record["attempts"], record["input_topic"]) == (
        letter.service,
        letter.attempts,
        letter.input_topic,
    )
    assert (record["input_partition"], record["input_offset"]) == (
        letter.input_partition,
        letter.input_offset,
    )
    files = download_results(store, "bug", tmp_path / "out")
    got = sorted(p.name for p in (tmp_path / "out" / "measurements").glob("*.csv"))
    assert got == ["20260101120000.000.csv", "20260101120000.800.csv"] and files
    for stem in ("20260101120000.000", "20260101120000.800"):
        assert (tmp_path / "out" / "measurements" / f"{stem}.csv").read_bytes() == (
            batch_project / "measurements" / f"{stem}.csv"
        ).read_bytes()


@pytest.fixture(scope="module")
def triton_server(
    stack_dir: Path, triton_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """Real Triton serving the shipped default model through the exported python backend."""
    from plankline.model.export import write_triton_repository
    from plankline.model.infer import DEFAULT_MODEL_DIR

    repo = tmp_path_factory.mktemp("triton-models")
    write_triton_repository(DEFAULT_MODEL_DIR, repo)
    server = stack.start_triton(
        stack_dir, repo, venv=triton_venv, model_config_name="cpu_python", name="triton-svc"
    )
    yield server
    server.stop()


def test_classifier_through_triton_gives_the_onnx_runtime_probabilities(
    raw: Path,
    batch_project: Path,
    kafka: ServerHandle,
    s3_server: ServerHandle,
    triton_server: ServerHandle,
    tmp_path: Path,
) -> None:
    from plankline.stream.results import download_results

    store = fresh_store(s3_server, "triton")
    with services(
        kafka,
        store,
        inference="triton",
        triton_url=triton_server.endpoint,
        triton_batch=8,
        triton_concurrency=3,
    ) as runners:
        submit(raw, "triton", store, kafka)
        wait_finished(store, "triton")
    assert runners["classifier"].stats.processed == 5
    _, metrics = stack.http_get(f"http://127.0.0.1:{triton_server.ports['metrics']}/metrics")
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("nv_inference_count{") and "plankline_classifier" in line
    ]
    assert served and served[0] > 20  # the ROIs really went through Triton
    download_results(store, "triton", tmp_path / "out")
    assert assert_same_outputs(tmp_path / "out", batch_project, prob_atol=1e-5) > 20


class ServiceProcess:
    """One service as its own process through the shared runner (``kill -9``-able)."""

    def __init__(
        self,
        name: str,
        kafka: ServerHandle,
        store: S3Store,
        log_dir: Path,
        *,
        factory: str | None = None,
        env: dict[str, str] | None = None,
        **kw: Any,
    ):
        import json
        import os

        settings = service_settings(name, kafka, store, **kw)
        self.env = dict(os.environ)
        for field, value in settings.model_dump(mode="json").items():
            if field == "s3_secret_key":
                value = settings.s3_secret_key.get_secret_value()
            if value is not None:
                self.env[f"PLANKLINE_{field.upper()}"] = (
                    json.dumps(value) if isinstance(value, list) else str(value)
                )
        self.env["PYTHONPATH"] = str(Path(__file__).resolve().parent)
        self.env.update(env or {})
        self.factory = factory or f"{SERVICES[name][0]}:from_env"
        self.name, self.log_dir, self.process = name, log_dir, None
        self.start()

    def start(self) -> None:
        import subprocess
        import sys

        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 (owned by the child)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plankline.stream.runner", self.factory],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        import signal

        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def test_classifier_on_triton_refuses_a_job_whose_model_triton_does_not_serve(
    raw: Path,
    kafka: ServerHandle,
    s3_server: ServerHandle,
    triton_server: ServerHandle,
    tmp_path: Path,
) -> None:
    """--set model=<another model> with Triton serving the default: every chunk failed with
    a model-mismatch error, none classified by the wrong model."""
    import shutil

    from plankline.model.infer import DEFAULT_MODEL_DIR
    from plankline.stream.ingest import submit as ingest

    other = tmp_path / "other-model"
    shutil.copytree(DEFAULT_MODEL_DIR, other)
    names = (other / "labels.txt").read_text().splitlines()
    (other / "labels.txt").write_text("\n".join(reversed(names)) + "\n")  # same net, new names
    store = fresh_store(s3_server, "mismatch")
    with services(kafka, store, inference="triton", triton_url=triton_server.endpoint) as runners:
        video = raw / "20260101120000.000.avi"
        settings = PipelineSettings(chunk_frames=CHUNK_FRAMES, fps=FPS, model=other)
        ingest([video], "mismatch", settings, store, kafka.endpoint)
        status = wait_finished(store, "mismatch", timeout_s=60)
    assert runners["classifier"].stats.dead_lettered == 3
    assert runners["classifier"].stats.failed_attempts == 3  # refused at once, no retries
    assert (status.planned, status.done, len(status.failed)) == (3, 0, 3)
    for error in status.failed.values():
        assert error.startswith("classifier gave up after 1 attempt(s): PermanentError: model")
        assert str(other) in error and "PLANKLINE_INFERENCE=onnxruntime" in error
    assert not list(store.list(contracts.job_prefix("mismatch") + "results/classification/"))


def wait_for(predicate: Any, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_of_each_service_mid_run_and_restart_gives_identical_outputs(
    raw: Path, batch_project: Path, kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    from plankline.stream.results import download_results

    store = fresh_store(s3_server, "kill")
    procs = {
        name: ServiceProcess(
            name,
            kafka,
            store,
            tmp_path,
            factory=f"stream_service_wrappers:{name}",
            env={"TEST_PAUSE_AFTER_FIRST_S": "inf"},  # holds until killed
        )
        for name in SERVICES
    }
    # each service pauses after writing its first outputs, before produce+commit: kill it there
    killed = []
    try:
        submit(raw, "kill", store, kafka)
        for name, proc in procs.items():

            def pausing(name: str = name) -> bool:
                return "pausing after" in (tmp_path / f"{name}.log").read_text()

            wait_for(pausing, 90, f"{name} to write its first outputs")
            proc.kill9()
            killed.append(name)
            proc.env["TEST_PAUSE_AFTER_FIRST_S"] = "0"
            proc.start()
        status = wait_finished(store, "kill", timeout_s=180)
    finally:
        for proc in procs.values():
            proc.stop()
    assert killed == list(SERVICES) and status.failed == {}
    for name in SERVICES:  # the message in hand at the kill was handled again after restart
        log = (tmp_path / f"{name}.log").read_text()
        first = log.split("pausing after ", 1)[1].split("\n", 1)[0]
        assert log.count(f"handled {first}\n") >= 2, f"{name} did not redo {first}"
    download_results(store, "kill", tmp_path / "out")
    assert assert_same_outputs(tmp_path / "out", batch_project) == status.rois


def test_a_cancelled_job_stops_chunks_already_published_in_every_service(
    raw: Path, kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    """`plankline submit s3://...` two stored videos, `plankline cancel` while the segmenter
    holds the job's first chunk (outputs written): the other 4 chunks, already in the topic,
    and the first chunk's ROIs downstream are all skipped; nothing finishes."""
    from plankline.cli import app
    from plankline.stream.jobs import read_manifest
    from plankline.stream.results import job_status
    from typer.testing import CliRunner

    store = fresh_store(s3_server, "cancel")
    urls = []
    for video in sorted(raw.glob("*.avi")):
        store.put_file(f"archive/{video.name}", video)
        urls.append(f"s3://{store.bucket}/archive/{video.name}")
    env = {
        "PLANKLINE_S3_ENDPOINT": store.endpoint,
        "PLANKLINE_S3_ACCESS_KEY": CREDENTIALS[store.endpoint][0],
        "PLANKLINE_S3_SECRET_KEY": CREDENTIALS[store.endpoint][1],
        "PLANKLINE_S3_BUCKET": store.bucket,
        "PLANKLINE_BOOTSTRAP_SERVERS": kafka.endpoint,
    }
    cli, job = CliRunner(), ["--job", "cancel", "--state-dir", str(tmp_path)]
    with services(kafka, store, pause_after_first={"segmenter": math.inf}) as runners:
        options = ["--chunk-frames", str(CHUNK_FRAMES), "--set", f"fps={FPS}"]
        sent = cli.invoke(app, ["submit", *urls, *job, *options], env=env)
        assert sent.exit_code == 0 and "5 chunks" in sent.output, sent.output
        held = runners["segmenter"].handler
        assert held.reached.wait(60), "the segmenter never wrote its first chunk"
        cancelled = cli.invoke(app, ["cancel", *job], env=env)
        assert cancelled.exit_code == 0 and "0/5 chunks done" in cancelled.output
        held.release()
        services_ = {name: runners[name].handler for name in ("measurer", "classifier")}

        def skipped() -> tuple[int, ...]:
            return (held.handler.skipped, *(s.skipped for s in services_.values()))

        wait_for(lambda: skipped() == (4, 1, 1), 60, f"the skips (got {skipped()})")
        assert runners["segmenter"].stats.processed == 5
    assert [v["source"] for v in read_manifest(store, "cancel")["videos"]] == urls  # whole URLs
    status = job_status(store, "cancel")
    assert status.cancelled and status.finished and (status.planned, status.done) == (5, 0)
    prefix = contracts.job_prefix("cancel")
    written = [k.rsplit("/", 1)[1] for k in store.list(prefix + "videos/") if "/chunks/" in k]
    assert sorted(written) == ["positions.csv", "rois.npz", "rois.tar"]  # chunk 0's, no more
    assert not list(store.list(prefix + "results/"))
    again = cli.invoke(app, ["submit", *urls, *job], env=env)
    assert again.exit_code == 2 and "was cancelled" in again.output, again.output
    shown = cli.invoke(app, ["results", str(tmp_path / "out"), *job, "--wait"], env=env)
    assert shown.exit_code == 1 and "0/5 chunks done" in shown.output  # settled, not waiting
    assert "(cancelled)" in shown.output, shown.output


def read_dead_letters(bootstrap: str, want: int, timeout_s: float = 30.0) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    topic = contracts.TOPIC_DEAD_LETTER
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(found) < want:
        for records in consumer.poll(timeout_ms=200).values():
            found += [contracts.parse(topic, r.value) for r in records]
    consumer.close()
    return found


def test_a_truncated_video_dead_letters_its_bad_chunk_and_the_job_reports_it(
    raw: Path,
    batch_project: Path,
    kafka: ServerHandle,
    s3_server: ServerHandle,
    tmp_path: Path,
) -> None:
    from plankline.stream.results import download_results, job_status

    bad = "20260101120020.000.avi"
    videos = tmp_path / "raw"
    videos.mkdir()
    for video in raw.glob("*.avi"):
        (videos / video.name).symlink_to(video)
    write_synth_video(tmp_path / bad, 8, seed=3, fps=FPS, **SMALL)
    data = (tmp_path / bad).read_bytes()
    (videos / bad).write_bytes(data[: int(len(data) * 0.6)])  # ends inside frame 4
    lone = tmp_path / "lone"
    (lone / "raw").mkdir(parents=True)
    (lone / "raw" / bad).symlink_to(videos / bad)
    batch = run_batch(BatchSettings(project=lone, chunk_frames=CHUNK_FRAMES, workers=1, fps=FPS))
    assert len(batch.failures) == 1

    store = fresh_store(s3_server, "corrupt")
    with services(kafka, store) as runners:
        submit(videos, "corrupt", store, kafka)
        status = wait_finished(store, "corrupt")
    assert status.planned == 7 and status.done == 7
    (name, error), *others = status.failed.items()
    assert not others and name == "20260101120020.400"
    assert bad in error and "frame 4" in error, error
    (letter,) = read_dead_letters(kafka.endpoint, 1)
    assert bad in letter.error and "frame 4" in letter.error and letter.service == "segmenter"
    assert letter.input_topic == contracts.TOPIC_CHUNKS
    stats = runners["segmenter"].stats  # dead-lettered once by the runner, never retried
    assert (stats.dead_lettered, stats.failed_attempts) == (1, 0)
    assert job_status(store, "corrupt").failed == status.failed
    from plankline.cli import app
    from typer.testing import CliRunner

    env = {
        "PLANKLINE_S3_ENDPOINT": store.endpoint,
        "PLANKLINE_S3_ACCESS_KEY": CREDENTIALS[store.endpoint][0],
        "PLANKLINE_S3_SECRET_KEY": CREDENTIALS[store.endpoint][1],
        "PLANKLINE_S3_BUCKET": store.bucket,
    }
    shown = CliRunner().invoke(
        app,
        ["results", str(tmp_path / "cli-out"), "--job", "corrupt", "--state-dir", str(tmp_path)],
        env=env,
    )
    assert shown.exit_code == 1, shown.output
    assert "7/7 chunks done" in shown.output and "1 failed" in shown.output
    assert "failed 20260101120020.400" in shown.output and "frame 4" in shown.output
    assert len(list((tmp_path / "cli-out" / "measurements").glob("*.csv"))) == 7
    download_results(store, "corrupt", tmp_path / "out")
    good, lone_out = tmp_path / "good", tmp_path / "lone_out"
    for kind in ("segmentation", "measurements", "classification", "ecotaxa"):
        (good / kind).mkdir(parents=True)
        (lone_out / kind).mkdir(parents=True)
        for path in (tmp_path / "out" / kind).iterdir():
            dest = lone_out if path.name.startswith("20260101120020") else good
            (dest / kind / path.name).symlink_to(path)
    assert assert_same_outputs(good, batch_project) > 20
    assert assert_same_outputs(lone_out, lone) > 0  # the ROIs before the bad frame, as batch


def test_two_segmenter_replicas_split_the_partitions_and_give_identical_outputs(
    raw: Path, batch_project: Path, kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    from plankline.stream.results import download_results

    store = fresh_store(s3_server, "replicas")
    names = ("segmenter", "segmenter", "measurer", "classifier", "collector")
    with services(kafka, store, names) as runners:
        one, two = runners["segmenter"], runners["segmenter-1"]

        def balanced() -> bool:
            return bool(one.assignment) and bool(two.assignment)

        wait_for(balanced, 60, "both segmenter replicas to own partitions")
        assert not one.assignment & two.assignment
        submit(raw, "replicas", store, kafka)
        wait_finished(store, "replicas")
    assert one.stats.processed > 0 and two.stats.processed > 0
    assert one.stats.processed + two.stats.processed == 5
    assert not one.stats.partitions_seen & two.stats.partitions_seen
    download_results(store, "replicas", tmp_path / "out")
    assert assert_same_outputs(tmp_path / "out", batch_project) > 20


def test_broker_restart_on_s3_storage_and_s3_restart_mid_run_give_identical_outputs(
    raw: Path, batch_project: Path, stack_dir: Path, tmp_path: Path
) -> None:
    import secrets

    from plankline.stream.results import download_results

    suffix = uuid.uuid4().hex[:6]
    secret = secrets.token_hex(16)
    s3 = stack.start_seaweedfs(stack_dir, "outage", secret, name=f"seaweedfs-{suffix}")
    s3.extra["secret_key"] = secret
    S3Store(s3.endpoint, "outage", secret, "tansu").ensure_bucket()

    def tansu(port: int | None = None) -> ServerHandle:
        return stack.start_tansu(
            stack_dir,
            storage="s3://tansu/",
            s3_endpoint=s3.endpoint,
            s3_access_key="outage",
            s3_secret_key=secret,
            name=f"tansu-s3-{suffix}",
            port=port,
        )

    broker = tansu()
    try:
        ensure_topics(broker.endpoint, {t: 2 for t in contracts.TOPICS})
        # a restarted SeaweedFS answers InternalError until its volume server re-registers
        store = fresh_store(s3, "outage", retries=10)
        # each holds after its first writes until released: the restarts happen inside the hold
        pauses = {"measurer": math.inf, "collector": math.inf}
        patient = {"max_attempts": 30, "backoff_initial_s": 0.2, "backoff_max_s": 2.0}
        with services(broker, store, pause_after_first=pauses, **patient) as runners:
            submit(raw, "outage", store, broker)
            measurer, collector = runners["measurer"].handler, runners["collector"].handler
            wait_for(measurer.reached.is_set, 60, "the measurer's first chunk")  # type: ignore[attr-defined]
            assert runners["measurer"].stats.produced == 0  # written, not produced nor committed
            broker.stop()  # mid-run
            broker = tansu(broker.ports["kafka"])
            measurer.release()  # type: ignore[attr-defined]
            wait_for(collector.reached.is_set, 90, "the collector's first chunk")  # type: ignore[attr-defined]
            s3.stop()  # mid-run: the collector holds a chunk written but not committed
            s3 = stack.start_seaweedfs(stack_dir, "outage", secret, name=s3.name, ports=s3.ports)
            collector.release()  # type: ignore[attr-defined]
            status = wait_finished(store, "outage", timeout_s=180)
        assert runners["measurer"].stats.produced > 0 and runners["collector"].stats.processed > 0
        assert status.failed == {}
        download_results(store, "outage", tmp_path / "out")
        assert assert_same_outputs(tmp_path / "out", batch_project) == status.rois
    finally:
        broker.stop()
        s3.stop()


def test_a_frame_folder_and_an_h264_video_give_the_batch_cli_outputs(
    kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    """Frame folders travel as tars of frame files; H.264 (not cuttable) as the whole video."""
    import cv2
    from plankline.imaging.synth import synth_frames
    from plankline.stream.results import download_results

    project = tmp_path / "batch"
    folder = project / "raw" / "20260101120030.000"
    folder.mkdir(parents=True)
    frames, _ = synth_frames(6, seed=21, **SMALL)  # type: ignore[arg-type]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame{i:04d}.png"), frame)
    write_synth_video(
        project / "raw" / "20260101120040.000.mp4", 6, seed=22, codec="h264", fps=FPS, **SMALL
    )
    run_batch(BatchSettings(project=project, chunk_frames=CHUNK_FRAMES, workers=1, fps=FPS))

    store = fresh_store(s3_server, "formats")
    with services(kafka, store):
        submit(project / "raw", "formats", store, kafka, pattern="2026*")
        status = wait_finished(store, "formats")
    assert status.planned == 4 and status.failed == {}
    download_results(store, "formats", tmp_path / "out")
    assert assert_same_outputs(tmp_path / "out", project) > 5


def test_stack_up_submit_results_down_gives_the_batch_cli_files(
    raw: Path, batch_project: Path, triton_venv: Path, tmp_path: Path
) -> None:
    """The user's path: `stack up` (Tansu, SeaweedFS, Triton, 4 services, gateway) -> submit
    -> results -> down."""
    import os

    import psutil
    from plankline.cli import app
    from plankline.stream.stack import read_state
    from typer.testing import CliRunner

    state = tmp_path / "stack"
    cli = CliRunner()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKLINE_")}
    env["PLANKLINE_TRITON_VENV"] = str(triton_venv)
    env["COLUMNS"] = "40"  # a narrow terminal setting: the output parsed below stays whole
    up = cli.invoke(
        app,
        ["stack", "up", "--state-dir", str(state), "--partitions", "2", "--gateway-port", "0"],
        env=env,
    )
    assert up.exit_code == 0, up.output
    handles = read_state(state)
    try:
        assert set(handles) == {*SERVICES, "gateway", "seaweedfs", "tansu", "triton"}
        videos = [str(p) for p in sorted(raw.glob("*.avi"))]
        options = ["--state-dir", str(state), "--job", "cli"]
        sent = cli.invoke(
            app,
            ["submit", *videos, *options, "--chunk-frames", str(CHUNK_FRAMES), "--set", "fps=10"],
            env=env,
        )
        assert sent.exit_code == 0, sent.output
        assert "5 chunks" in sent.output
        got = cli.invoke(
            app, ["results", str(tmp_path / "out"), *options, "--wait", "--timeout", "120"], env=env
        )
        assert got.exit_code == 0, got.output
        assert "5/5 chunks done" in got.output
        status = cli.invoke(app, ["stack", "status", "--state-dir", str(state)], env=env)
        assert status.exit_code == 0, status.output
        lines = {line.split()[0]: line.split() for line in status.output.splitlines() if line}
        assert lines["segmenter"][1] == "5" and lines["collector"][1] == "10"  # messages ok
        (running,) = [
            x for x in status.output.splitlines() if x.startswith("segmenter ") and "cpu" in x
        ]
        assert float(running.split("cpu")[1].split()[0]) > 0.5, running  # it segmented 5 chunks
    finally:
        down = cli.invoke(app, ["stack", "down", "--state-dir", str(state)], env=env)
    assert down.exit_code == 0 and down.output.count("stopped") == 8, down.output
    assert not any(psutil.pid_exists(h.pid) and h.alive() for h in handles.values())
    assert assert_same_outputs(tmp_path / "out", batch_project, prob_atol=1e-5) > 20


def test_submit_refuses_a_second_video_whose_outputs_would_take_the_same_names(
    raw: Path, kafka: ServerHandle, s3_server: ServerHandle, tmp_path: Path
) -> None:
    """``my tow (1).avi`` is submitted as ``my_tow_1`` (ids hold no spaces); a second
    video of that stem in the same job is refused, naming both, as the batch CLI does."""
    from plankline.stream.ingest import submit as ingest

    video = sorted(raw.glob("*.avi"))[0]
    for name in ("my tow (1).avi", "my_tow_1.avi"):
        (tmp_path / name).symlink_to(video)
    store = fresh_store(s3_server, "names")
    settings = PipelineSettings(chunk_frames=CHUNK_FRAMES, fps=FPS)
    report = ingest(sorted(tmp_path.glob("*.avi")), "names", settings, store, kafka.endpoint)
    assert len(report.failures) == 1, report.failures
    assert (
        "my_tow_1.avi: its outputs would be named 'my_tow_1' as those of my tow (1).avi"
        in (report.failures[0])
    )
    assert report.chunks > 0  # the first one went in
