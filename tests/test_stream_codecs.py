"""Every input the batch CLI reads gives the batch CLI's outputs through the real stack.

One stack session for the whole module (a Tansu broker, the session's SeaweedFS, Triton
serving the shipped model, the four services): it processes small videos in every codec
and container the batch reads (uncompressed, FFV1, MJPEG, H.264 in AVI/MP4/MKV; 8- and
16-bit where the codec holds 16) and frame folders (PNG, TIFF, JPEG), submitted from
disk, plus videos already in the object store submitted by reference
(``plankline submit s3://bucket/key``). Each input is then compared with the batch CLI
run on the same files with the same settings: same ROI images, same measurements, the
same classes (probabilities within Triton's float tolerance).

FFV1 is written with a keyframe every 12 frames, as the ``ffmpeg`` tool does: chunks
start between keyframes, which is what made the stream dead-letter every chunk after
the first (``container.seek(0)``: Operation not permitted) when it cut videos into
per-chunk files.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from plankline.batch.run import run_batch
from plankline.config import BatchSettings, PipelineSettings
from plankline.imaging.synth import synth_frames
from plankline.imaging.video import write_video
from plankline.model.infer import read_classification_csv
from plankline.stream import contracts, stack
from plankline.stream.runner import ensure_topics
from plankline.stream.stack import ServerHandle
from test_stream_services import (  # the services in threads, as the other stream tests
    CREDENTIALS,
    fresh_store,
    services,
    tar_members,
    triton_server,  # noqa: F401 (module fixture: real Triton serving the default model)
    wait_finished,
)

pytestmark = pytest.mark.integration

SIZE = {"height": 192, "width": 256, "density": 14.0, "size_range": (8.0, 70.0)}
N_FRAMES, FPS = 6, 10.0  # two chunks per input: the second starts mid-GOP, after priming
SETTINGS = PipelineSettings(chunk_frames=4, fps=FPS, prime_frames=2)
CHUNKS = -(-N_FRAMES // SETTINGS.chunk_frames)
BLOCK = 64 << 10  # ranged reads of 64 KiB: an 8-bit frame spans one or two blocks

#: name -> (codec or frame suffix, container, bits, keyframe interval)
INPUTS: dict[str, tuple[str, str, int, int | None]] = {
    "raw-avi": ("rawvideo", ".avi", 8, None),
    "raw-mkv": ("rawvideo", ".mkv", 8, None),
    "ffv1-avi": ("ffv1", ".avi", 8, 12),
    "ffv1-avi-16bit": ("ffv1", ".avi", 16, 12),
    "ffv1-mkv-16bit": ("ffv1", ".mkv", 16, 1),
    "mjpeg-avi": ("mjpeg", ".avi", 8, None),
    "mjpeg-mp4": ("mjpeg", ".mp4", 8, None),
    "mjpeg-mkv": ("mjpeg", ".mkv", 8, None),
    "h264-avi": ("h264", ".avi", 8, 4),
    "h264-mp4": ("h264", ".mp4", 8, None),
    "h264-mkv": ("h264", ".mkv", 8, 4),
    "h264-ts": ("h264", ".ts", 8, 4),
    "mpeg2-mpg": ("mpeg2video", ".mpg", 8, 4),
    "png-frames": (".png", "", 8, None),
    "png-frames-broken": (".png", "", 8, None),  # frame 1's file does not decode
    "png-frames-16bit": (".png", "", 16, None),
    "tiff-frames": (".tif", "", 8, None),
    "tiff-frames-16bit": (".tif", "", 16, None),
    "jpeg-frames": (".jpg", "", 8, None),
}
#: videos that also go in by reference, from an "archive" bucket
BY_REFERENCE = ("raw-avi", "ffv1-avi", "h264-mkv", "h264-ts")


def stem(case: str) -> str:
    """Each input starts 20 s after the previous one: its chunks' names start with it."""
    seconds = 20 * list(INPUTS).index(case)
    return f"2026010112{seconds // 60:02d}{seconds % 60:02d}"


def file_name(case: str) -> str:
    container = INPUTS[case][1]
    return f"{stem(case)}.000{container}"


@functools.cache
def _synthetic() -> tuple[np.ndarray, ...]:
    return tuple(synth_frames(N_FRAMES, seed=30, **SIZE)[0])  # type: ignore[arg-type]


def frames_of(case: str) -> list[np.ndarray]:
    """The same organisms in every input, shifted so no two inputs are the same video."""
    shift = 17 * list(INPUTS).index(case)
    frames = [np.roll(f, shift, axis=1) for f in _synthetic()]
    if INPUTS[case][2] == 16:  # the full 16-bit range, low bits used too
        rng = np.random.default_rng(5)
        frames = [
            f.astype(np.uint16) * 256 + rng.integers(0, 256, f.shape, np.uint16) for f in frames
        ]
    return frames


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("codecs") / "raw"
    folder.mkdir()
    for case, (codec, container, _, gop) in INPUTS.items():
        frames = frames_of(case)
        if container:
            write_video(folder / file_name(case), frames, FPS, codec, keyframe_every=gop)
        else:
            (folder / file_name(case)).mkdir()
            for i, frame in enumerate(frames):
                assert cv2.imwrite(str(folder / file_name(case) / f"f{i:03d}{codec}"), frame)
            if case.endswith("-broken"):  # left out, named in the chunk's warning, by both
                (folder / file_name(case) / f"f001{codec}").write_bytes(b"\x89PNG broken")
    return folder


@pytest.fixture(scope="module")
def batch_project(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("codecs-batch")
    (project / "raw").symlink_to(raw)
    report = run_batch(
        BatchSettings(project=project, workers=1, **SETTINGS.model_dump(exclude_unset=True))
    )
    assert report.failures == []
    return project


@pytest.fixture(scope="module")
def broker(stack_dir: Path) -> Iterator[ServerHandle]:
    try:
        stack.tansu_binary()
    except FileNotFoundError as error:
        pytest.skip(f"Tansu binary missing: {error}")
    server = stack.start_tansu(stack_dir, name=f"tansu-codecs-{uuid.uuid4().hex[:6]}")
    ensure_topics(server.endpoint, {t: 2 for t in contracts.TOPICS})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stream_run(
    raw: Path,
    broker: ServerHandle,
    s3_server: ServerHandle,
    triton_server: ServerHandle,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Every input from disk (job ``disk``) and three videos by reference (job ``ref``,
    through the ``plankline submit`` CLI), one services session; results downloaded."""
    from plankline.cli import app
    from plankline.stream.ingest import submit
    from plankline.stream.results import download_results
    from typer.testing import CliRunner

    store = fresh_store(s3_server, "codecs")
    archive = fresh_store(s3_server, "archive")  # where a cruise's videos already are
    for case in BY_REFERENCE:
        archive.put_file(f"cruise/{file_name(case)}", raw / file_name(case))
    out = tmp_path_factory.mktemp("codecs-out")
    with services(
        broker,
        store,
        inference="triton",
        triton_url=triton_server.endpoint,
        s3_read_block_bytes=BLOCK,
        s3_readahead_bytes=4 * BLOCK,
    ) as runners:
        disk = submit(sorted(raw.iterdir()), "disk", SETTINGS, store, broker.endpoint)
        assert disk.failures == [] and disk.chunks == CHUNKS * len(INPUTS)
        access, secret = CREDENTIALS[store.endpoint]
        env = {
            "PLANKLINE_BOOTSTRAP_SERVERS": broker.endpoint,
            "PLANKLINE_S3_ENDPOINT": store.endpoint,
            "PLANKLINE_S3_ACCESS_KEY": access,
            "PLANKLINE_S3_SECRET_KEY": secret,
            "PLANKLINE_S3_BUCKET": store.bucket,
        }
        urls = [f"s3://{archive.bucket}/cruise/{file_name(c)}" for c in BY_REFERENCE]
        sets = [*("--chunk-frames", "4", "--set", "fps=10", "--set", "prime_frames=2")]
        state = out / "no-stack"
        ref = CliRunner().invoke(
            app, ["submit", *urls, "--job", "ref", *sets, "--state-dir", str(state)], env=env
        )
        assert ref.exit_code == 0, ref.output
        disk_status = wait_finished(store, "disk", timeout_s=300)
        ref_status = wait_finished(store, "ref", timeout_s=120)
    for job in ("disk", "ref"):
        download_results(store, job, out / job)
    return {
        "out": out,
        "status": {"disk": disk_status, "ref": ref_status},
        "store": store,
        "archive": archive,
        "segmenter": runners["segmenter"].handler,
        "submit_output": ref.output,
    }


def assert_same_as_batch(stream_dir: Path, batch_dir: Path, prefix: str) -> int:
    """Chunks starting with ``prefix``: same ROI images, measurements, classes; ROI count."""
    names = sorted(p.name for p in (batch_dir / "measurements").glob(f"{prefix}*.csv"))
    assert len(names) == CHUNKS, names
    assert names == sorted(p.name for p in (stream_dir / "measurements").glob(f"{prefix}*.csv"))
    n_rois = 0
    for name in names:
        chunk = name.removesuffix(".csv")
        tar = (batch_dir / "segmentation" / f"{chunk}.tar").read_bytes()
        assert (stream_dir / "segmentation" / f"{chunk}.tar").read_bytes() == tar, chunk
        n_rois += len(tar_members(batch_dir / "segmentation" / f"{chunk}.tar"))
        assert (stream_dir / "measurements" / name).read_bytes() == (
            batch_dir / "measurements" / name
        ).read_bytes(), f"{chunk}: measurements differ"
        ids_a, probs_a, classes_a = read_classification_csv(stream_dir / "classification" / name)
        ids_b, probs_b, classes_b = read_classification_csv(batch_dir / "classification" / name)
        assert ids_a == ids_b and classes_a == classes_b
        np.testing.assert_allclose(probs_a, probs_b, rtol=0, atol=1e-5)
    return n_rois


@pytest.mark.parametrize("case", list(INPUTS))
def test_the_stream_gives_the_batch_cli_outputs_for_every_input_the_batch_reads(
    case: str, stream_run: dict[str, Any], batch_project: Path
) -> None:
    assert stream_run["status"]["disk"].failed == {}
    n_rois = assert_same_as_batch(stream_run["out"] / "disk", batch_project, stem(case))
    assert n_rois >= 10  # organisms in every chunk set: the comparison is not vacuous


@pytest.mark.parametrize("case", BY_REFERENCE)
def test_a_video_in_the_object_store_is_processed_in_place_by_reference(
    case: str, stream_run: dict[str, Any], batch_project: Path
) -> None:
    status = stream_run["status"]["ref"]
    assert status.failed == {} and status.planned == CHUNKS * len(BY_REFERENCE)
    n = len(BY_REFERENCE)
    assert f"{CHUNKS * n} chunks ({N_FRAMES * n} frames) submitted" in stream_run["submit_output"]
    assert assert_same_as_batch(stream_run["out"] / "ref", batch_project, stem(case)) >= 10
    store = stream_run["store"]
    prefix = contracts.job_prefix("ref")
    assert not [k for k in store.list(prefix) if k.endswith("/source")]  # no copy of the video
    assert [k for k in store.list(contracts.job_prefix("disk")) if k.endswith("/source")]
    # the segmenter read the archive's object itself (ranged GETs, see test_stream_ranged)
    fetched, requests = stream_run["segmenter"].source_reads[
        f"{stream_run['archive'].bucket}/cruise/{file_name(case)}"
    ]
    assert fetched > 0 and requests >= 3
