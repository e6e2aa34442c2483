"""End-to-end tests of the batch pipeline and its CLI on small generated videos."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pytest
from plankline.batch.project import Project
from plankline.batch.run import run_batch
from plankline.config import BatchSettings
from plankline.imaging.score import match_boxes, score_detections
from plankline.imaging.segment import SegmentParams
from plankline.imaging.synth import GroundTruth, truth_path, write_synth_video
from plankline.model.infer import read_classification_csv
from plankline.outputs.ecotaxa import validate_ecotaxa_zip
from plankline.outputs.tables import read_csv
from typer.testing import CliRunner

SMALL = {"height": 256, "width": 384, "density": 12.0, "size_range": (8.0, 90.0)}
VIDEO_A = "20260101120000.000.avi"
VIDEO_B = "20260101120010.000.avi"


def make_project(root: Path, videos: dict[str, int], seed: int = 0) -> Path:
    (root / "raw").mkdir(parents=True, exist_ok=True)
    for i, (name, frames) in enumerate(videos.items()):
        write_synth_video(root / "raw" / name, frames, seed=seed + i, **SMALL)
    return root


def rois_of(project: Path) -> dict[str, np.ndarray]:
    """All measurement rows of a project, sorted by (video, line, column)."""
    parts = [
        read_csv(p, dtypes={"image": str}) for p in sorted((project / "measurements").glob("*.csv"))
    ]
    parts = [p for p in parts if len(p.get("image", ()))]
    table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((table["column"], table["line"], table["video"]))
    return {k: v[order] for k, v in table.items()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small videos processed in 3-frame chunks on two workers."""
    root = make_project(tmp_path_factory.mktemp("finished"), {VIDEO_A: 8, VIDEO_B: 5})
    report = run_batch(BatchSettings(project=root, chunk_frames=3, workers=2, fps=10.0))
    assert report.failures == []
    return root


def test_every_roi_is_found_measured_archived_and_classified(finished: Path) -> None:
    project = Project(finished)
    table = rois_of(finished)
    for video in project.videos():
        truth = GroundTruth.read_csv(truth_path(video))
        mine = table["video"] == video.name
        score = score_detections(
            np.stack([truth.line, truth.column, truth.height, truth.width], 1),
            truth.area_px,
            np.stack([table[k][mine] for k in ("line", "column", "bbox_height", "bbox_width")], 1),
            table["area"][mine],
            min_area_px=SegmentParams().min_area_px,
        )
        assert score.recall >= 0.95 and score.precision >= 0.95, (video, score)
    for record in project.done_records():
        paths = project.outputs(record["name"])
        measured = read_csv(paths["measurements"], dtypes={"image": str})
        ids, probs, _ = read_classification_csv(paths["classification"])
        with tarfile.open(paths["rois"]) as tar:
            members = [m.name.removesuffix(".png") for m in tar.getmembers()]
        assert list(ids) == list(measured["image"]) == members
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
        assert validate_ecotaxa_zip(paths["ecotaxa"]) == []


def test_chunks_are_named_by_their_own_start_time(finished: Path) -> None:
    names = sorted(p.stem for p in (finished / "segmentation").glob("*.tar"))
    # 8 frames at 10 frames/s in chunks of 3: starts at 0.0, 0.3, 0.6 s; video B at 10 s.
    assert names == [
        "20260101120000.000",
        "20260101120000.300",
        "20260101120000.600",
        "20260101120010.000",
        "20260101120010.300",
    ]


def test_archives_date_their_members_by_the_chunk_s_capture_time(finished: Path) -> None:
    """Not the time of writing: a rerun, a resumed run and the stream give the same bytes."""
    with tarfile.open(finished / "segmentation" / "20260101120010.300.tar") as tar:
        assert {m.mtime for m in tar} == {
            int(datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC).timestamp())
        }
    with zipfile.ZipFile(finished / "ecotaxa" / "20260101120010.300.zip") as z:
        assert {i.date_time for i in z.infolist()} == {(2026, 1, 1, 12, 0, 10)}


def test_chunked_run_finds_the_same_objects_as_one_chunk_run(
    finished: Path, tmp_path: Path
) -> None:
    """Same objects, whole and once; areas differ only by the flat-field's warm-up (<3%,
    or 2 px: a small object's outline at the noise-relative adaptive level moves by a
    pixel or two when the warm-up differs). So an object within 2 px of the size filter
    may be kept by one run and not the other; every larger one is in both."""
    whole = make_project(tmp_path, {VIDEO_A: 8, VIDEO_B: 5})
    run_batch(BatchSettings(project=whole, chunk_frames=100, workers=1, fps=10.0))
    chunked, single = rois_of(finished), rois_of(whole)
    near_filter = SegmentParams().min_area_px + 3

    def objects(t: dict[str, np.ndarray]) -> dict[tuple[str, int, int, int], int]:
        keys = zip(t["video"], t["line"], t["column"], t["frame"], strict=True)
        return dict(zip(keys, t["area"].tolist(), strict=True))

    a, b = objects(chunked), objects(single)
    assert len(a) > 100
    for one, other in ((a, b), (b, a)):
        only = {k: area for k, area in one.items() if k not in other}
        assert all(area < near_filter for area in only.values()), only
    both = sorted(a.keys() & b.keys())
    np.testing.assert_allclose([a[k] for k in both], [b[k] for k in both], rtol=0.03, atol=2)


def test_chunks_read_through_one_decoder_give_the_outputs_of_chunks_read_alone(
    tmp_path: Path,
) -> None:
    """A worker reads consecutive chunks through one open decoder (``ContinuousReader``,
    saving the re-decode from the keyframe before each chunk on inter-frame codecs): the
    outputs are byte for byte those of every chunk read on its own. An H.264 AVI with
    B-frames and a keyframe every 4 frames, in 2-frame chunks."""
    from functools import partial

    from plankline.batch.run import chunk_runs, plan_video
    from plankline.imaging.video import iter_frames, write_video
    from plankline.pipeline import process_chunk

    synth = make_project(tmp_path / "synth", {VIDEO_A: 10})
    frames = [f for _, f in iter_frames(synth / "raw" / VIDEO_A)]
    runs, alone = tmp_path / "runs", tmp_path / "alone"
    for root in (runs, alone):
        (root / "raw").mkdir(parents=True)
        write_video(root / "raw" / VIDEO_A, frames, fps=10.0, codec="h264", keyframe_every=4)
    settings = BatchSettings(project=runs, chunk_frames=2, workers=1, fps=10.0, classify=False)
    assert run_batch(settings).failures == []
    project = Project(alone)
    project.create()
    video = project.raw / VIDEO_A
    chunks = plan_video(video, settings)
    assert [len(r) for r in chunk_runs(chunks, 3)] == [3, 2]
    for chunk in chunks:
        process_chunk(partial(iter_frames, video), chunk, settings, project.outputs(chunk.name))
    for chunk in chunks:
        a, b = Project(runs).outputs(chunk.name), project.outputs(chunk.name)
        assert a["measurements"].read_bytes() == b["measurements"].read_bytes(), chunk.name
        with tarfile.open(a["rois"]) as ta, tarfile.open(b["rois"]) as tb:
            assert [(m.name, ta.extractfile(m).read()) for m in ta] == [
                (m.name, tb.extractfile(m).read()) for m in tb
            ]
    assert sum(
        len(read_csv(Project(runs).outputs(c.name)["measurements"])["image"]) for c in chunks
    )


def test_transport_and_program_streams_in_raw_are_videos_and_other_files_are_named(
    tmp_path: Path,
) -> None:
    """An H.264 ``.ts`` and an MPEG-2 ``.mpg`` are processed (they were left out of raw/'s
    videos), chunks named by their own start time; a file that is no video is left alone
    and named in the log, a sub-folder of videos in a warning."""
    from plankline.batch.run import configure_logging
    from plankline.imaging.video import iter_frames, write_video

    synth = make_project(tmp_path / "synth", {VIDEO_A: 6})
    frames = [f for _, f in iter_frames(synth / "raw" / VIDEO_A)]
    root = tmp_path / "p"
    (root / "raw").mkdir(parents=True)
    write_video(root / "raw" / "20260101120000.000.ts", frames, 10.0, "h264", keyframe_every=4)
    write_video(root / "raw" / "20260101120010.000.mpg", frames, 10.0, "mpeg2video")
    (root / "raw" / "notes.txt").write_text("CTD cast 3")
    (root / "raw" / "dive2").mkdir()  # videos in a sub-folder are not read: said so
    write_video(root / "raw" / "dive2" / "20260101130000.000.avi", frames, 10.0)
    logger = logging.getLogger("plankline")
    handlers, level = logger.handlers[:], logger.level
    configure_logging(root)
    try:
        report = run_batch(BatchSettings(project=root, chunk_frames=4, workers=2, fps=10.0))
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers[:], logger.level = handlers, level
    assert report.failures == [] and report.chunks_done == 4 and report.frames == 12
    assert report.left_alone == [
        "raw/dive2/ holds no frames: left alone (videos are read from raw/ itself, one "
        "project per dive or folder)"
    ]
    names = sorted(p.stem for p in (root / "measurements").glob("*.csv"))
    assert names == [
        "20260101120000.000",
        "20260101120000.400",
        "20260101120010.000",
        "20260101120010.400",
    ]
    a, b = (rois_of(root)[k] for k in ("video", "line"))
    assert set(a) == {"20260101120000.000.ts", "20260101120010.000.mpg"} and len(b) > 10
    assert "not a video" in (root / "plankline.log").read_text()
    assert "notes.txt" in (root / "plankline.log").read_text()


def test_unreadable_files_of_a_frame_folder_are_left_out_and_named(tmp_path: Path) -> None:
    """A frame folder's files are each their own: one of another size and one that does
    not decode are left out, each named in its chunk's warning, and every other frame is
    segmented (they failed every chunk that read them, priming included, with an OpenCV
    size error). Frame 7 is also the frame before the third chunk: it starts without it."""
    import cv2
    from plankline.batch.run import iter_chunks, plan_video
    from plankline.imaging.video import iter_frames

    synth = make_project(tmp_path / "synth", {VIDEO_A: 12})
    frames = [f for _, f in iter_frames(synth / "raw" / VIDEO_A)]
    root = tmp_path / "p"
    folder = root / "raw" / "cast3"
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), frame)
    cv2.imwrite(str(folder / "img_005.png"), frames[5][: frames[5].shape[0] // 2])
    (folder / "img_007.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    settings = BatchSettings(project=root, chunk_frames=4, workers=1, fps=10.0, classify=False)
    Project(root).create()
    results = list(iter_chunks(plan_video(folder, settings), settings))
    assert [r.error for r in results] == [None, None, None]
    assert results[0].warning is None and results[2].warning is None
    warning = results[1].warning or ""
    assert warning.startswith("2 unreadable frame(s) left out")
    assert "img_005.png: frame 5:" in warning and "unlike the first frame" in warning
    assert "img_007.png: frame 7: cannot decode image" in warning
    found = set(rois_of(root)["frame"].tolist())
    assert {0, 4, 6, 8, 11} <= found and not {5, 7} & found
    for i in range(8, 12):  # more broken files: all counted, the first few named
        (folder / f"img_{i:03d}.png").write_bytes(b"not a png")
    whole = settings.model_copy(update={"chunk_frames": 12})
    (result,) = list(iter_chunks(plan_video(folder, whole), whole))
    warning = result.warning or ""
    assert result.error is None and warning.startswith("6 unreadable frame(s) left out:")
    assert warning.endswith("img_010.png: frame 10: cannot decode image; and 1 more")


def test_file_names_with_spaces_and_brackets_are_processed_and_a_clash_is_named(
    tmp_path: Path,
) -> None:
    """``my tow (1).avi`` failed its whole video and ``cast[2].avi`` every chunk at the ROI
    tar; both run now, under stems ids can hold. A second video whose outputs would take
    the same names fails, naming both, instead of writing over the first one's."""
    root = make_project(tmp_path, {"my tow (1).avi": 4, "cast[2].avi": 4})
    (root / "raw" / "my_tow_1.avi").symlink_to(root / "raw" / "my tow (1).avi")
    report = run_batch(BatchSettings(project=root, chunk_frames=4, workers=1, fps=10.0))
    assert len(report.failures) == 1
    assert (
        "my_tow_1.avi: its outputs would be named 'my_tow_1' as those of my tow (1).avi"
        in (report.failures[0])
    )
    names = sorted(p.name for p in (root / "measurements").glob("*.csv"))
    assert names == ["cast_2-c0000.csv", "my_tow_1-c0000.csv"]
    table = rois_of(root)
    assert set(table["video"]) == {"my tow (1).avi", "cast[2].avi"}
    for z in (root / "ecotaxa").glob("*.zip"):
        assert validate_ecotaxa_zip(z) == []


def test_summary_counts_every_roi_per_second(finished: Path) -> None:
    counts = read_csv(finished / "summary" / "counts_per_second.csv", dtypes={"class": str})
    assert counts["count"].sum() == len(rois_of(finished)["image"])
    assert set(counts["second"]) == {0}  # 8 frames at 10 frames/s: all in the first second


def test_counts_per_second_tally_every_roi_by_video_second_and_class(tmp_path: Path) -> None:
    from collections import Counter

    from plankline.model.infer import write_classification_csv
    from plankline.outputs.tables import write_csv
    from plankline.pipeline import counts_per_second

    rng = np.random.default_rng(3)
    names = ["copepod", "detritus", "diatom"]
    records, expected, sure = [], Counter(), Counter()
    thresholds = {"copepod": 0.5, "detritus": 0.7, "diatom": None}  # None: never reached
    for i, video in enumerate([VIDEO_A, VIDEO_B]):
        n = 400
        seconds = np.sort(rng.uniform(0, 7.9, n))
        probs = rng.dirichlet(np.ones(len(names)), n).astype(np.float32)
        ids = [f"{i}_{k}" for k in range(n)]
        write_csv(tmp_path / f"m{i}.csv", {"image": ids, "seconds": seconds})
        write_classification_csv(tmp_path / f"c{i}.csv", ids, probs, names, thresholds=thresholds)
        records.append({"name": str(i), "video": f"raw/{video}", "fps": 10.0})
        for s, p in zip(seconds, probs, strict=True):  # the exact top class
            k = int(p.argmax())
            expected[(video, int(s), names[k])] += 1
            limit = thresholds[names[k]]
            sure[(video, int(s), names[k])] += limit is not None and p[k] >= limit
    write_csv(tmp_path / "m2.csv", {"image": ["x"], "frame": [0]})  # no fps: no seconds
    write_classification_csv(tmp_path / "c2.csv", ["x"], np.ones((1, 3), np.float32) / 3, names)
    records.append({"name": "2", "video": "raw/other.avi", "fps": 10.0})

    def outputs(name: str) -> dict[str, Path]:
        return {
            "measurements": tmp_path / f"m{name}.csv",
            "classification": tmp_path / f"c{name}.csv",
        }

    table = counts_per_second(records, outputs)
    got = Counter(
        {
            (v, s, c): n
            for v, s, c, n in zip(
                table["video"], table["second"], table["class"], table["count"], strict=True
            )
        }
    )
    assert got == expected and sum(got.values()) == 800
    confident = zip(
        table["video"], table["second"], table["class"], table["confident"], strict=True
    )
    assert {(v, s, c): n for v, s, c, n in confident} == {k: sure[k] for k in expected}
    assert 0 < sum(table["confident"]) < 800
    keys = list(zip(table["video"], table["second"], table["class"], strict=True))
    assert keys == sorted(keys)
    # a hand-made table without top_class: the largest written probability
    ids, probs, _ = read_classification_csv(tmp_path / "c0.csv")
    write_csv(tmp_path / "c0.csv", {"image": ids} | {n: probs[:, j] for j, n in enumerate(names)})
    hand_made = counts_per_second(records, outputs)
    assert hand_made["count"] == table["count"]
    assert all(  # no threshold known: none confident
        n == 0
        for v, n in zip(hand_made["video"], hand_made["confident"], strict=True)
        if v == VIDEO_A
    )
    write_csv(tmp_path / "m1.csv", {"image": ["a"], "seconds": [0.5]})  # out of step
    with pytest.raises(ValueError, match=r"c1\.csv: 400 ROIs, but .*m1\.csv has 1"):
        counts_per_second(records, outputs)


def test_the_summary_read_by_a_pool_is_the_summary_read_inline(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cruise's summary reads every chunk's tables (~15 us a ROI): ``plankline run``
    reads them with its workers once there are enough chunks."""
    from plankline.batch import run

    files = [finished / "summary" / name for name in ("chunks.csv", "counts_per_second.csv")]
    run.write_summary(Project(finished), workers=1)
    inline = [f.read_bytes() for f in files]
    monkeypatch.setattr(run, "SUMMARY_ROIS_PER_WORKER", 1)  # a pool of 2 for 5 chunks
    run.write_summary(Project(finished), workers=2)
    assert [f.read_bytes() for f in files] == inline
    assert inline[1].count(b"\n") > 2


def test_rerun_skips_finished_chunks(finished: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (finished / "segmentation").iterdir()}
    report = run_batch(BatchSettings(project=finished, chunk_frames=3, workers=1, fps=10.0))
    assert report.chunks_done == 0 and report.chunks_skipped == 5
    assert before == {p: p.stat().st_mtime_ns for p in (finished / "segmentation").iterdir()}


def test_corrupt_and_empty_videos_are_recorded_and_the_batch_completes(tmp_path: Path) -> None:
    root = make_project(tmp_path, {VIDEO_A: 6, VIDEO_B: 6})
    good = (root / "raw" / VIDEO_B).read_bytes()
    (root / "raw" / VIDEO_B).write_bytes(good[: int(len(good) * 0.6)])  # truncated mid-frame
    (root / "raw" / "20260101120020.000.avi").write_bytes(b"")
    result = CliRunner().invoke(
        __import__("plankline.cli", fromlist=["app"]).app,
        ["run", str(root), "--chunk-frames", "3", "--workers", "1", "--set", "fps=10"],
    )
    assert result.exit_code == 1, result.output
    failed = list(Project(root).failed_records())
    errors = " | ".join(r["error"] for r in failed)
    assert "20260101120020.000.avi" in errors
    assert VIDEO_B in errors and "frame 3" in errors, errors
    table = rois_of(root)
    assert set(table["video"]) == {VIDEO_A, VIDEO_B}  # ROIs before the bad frame are kept
    assert (table["video"] == VIDEO_B).sum() > 0
    assert len(list(Project(root).done_records())) == 3  # A: 2 chunks, B: first chunk


def start_run(root: Path, workers: int) -> subprocess.Popen[bytes]:
    """``plankline run`` on ``root`` (1-frame chunks) as a real process, in its own group."""
    command = [sys.executable, "-m", "plankline.cli", "run", str(root), "--chunk-frames", "1"]
    command += ["--workers", str(workers), "--set", "fps=10"]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def freeze_once_done(process: subprocess.Popen[bytes], done: Path, at_least: int) -> int:
    """Wait until ``at_least`` chunks are done, then SIGSTOP the run's whole process group.

    The kill that follows hits exactly the state counted here (nothing moves while frozen);
    returns the number of done chunks at that moment.
    """
    deadline = time.monotonic() + 180
    while len(list(done.glob("*.json"))) < at_least:
        assert process.poll() is None, f"the run exited early ({process.returncode})"
        assert time.monotonic() < deadline, "no chunk finished in 180 s"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGSTOP)
    return len(list(done.glob("*.json")))


def gone(process: psutil.Process) -> bool:
    """True once the process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_same_rois_as(root: Path, clean: Path) -> None:
    assert not [
        p
        for p in root.rglob("*")
        if p.name.startswith(".") and p.is_file() and ".plankline" not in p.parts
    ]  # no temp files left behind
    resumed_rois, clean_rois = rois_of(root), rois_of(clean)
    assert len(set(resumed_rois["image"])) == len(resumed_rois["image"])  # no duplicates
    for key in ("image", "line", "column", "area", "perimeter"):
        np.testing.assert_array_equal(resumed_rois[key], clean_rois[key])
    # every output to the byte: the archives date their members by capture time, not now
    kinds = ("segmentation", "measurements", "classification", "ecotaxa")
    files = sorted(p.relative_to(clean) for k in kinds for p in (clean / k).iterdir())
    assert files == sorted(p.relative_to(root) for k in kinds for p in (root / k).iterdir())
    assert files
    assert [f for f in files if (root / f).read_bytes() != (clean / f).read_bytes()] == []


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the kill tests' videos processed without interruption."""
    clean = make_project(tmp_path_factory.mktemp("clean"), KILL_VIDEOS)
    run_batch(BatchSettings(project=clean, chunk_frames=1, workers=1, fps=10.0))
    return clean


KILL_VIDEOS = {VIDEO_A: 12, VIDEO_B: 8}
KILL_CHUNKS = 20


def test_killed_run_resumes_to_the_same_outputs(tmp_path: Path, clean_run: Path) -> None:
    root = make_project(tmp_path / "killed", KILL_VIDEOS)
    process = start_run(root, workers=1)
    done = root / ".plankline" / "done"
    finished_before = freeze_once_done(process, done, 3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 3 <= finished_before < KILL_CHUNKS, "the kill must land mid-run"
    assert len(list(done.glob("*.json"))) == finished_before
    resumed = run_batch(BatchSettings(project=root, chunk_frames=1, workers=1, fps=10.0))
    assert resumed.chunks_skipped == finished_before
    assert resumed.chunks_done == KILL_CHUNKS - finished_before
    assert_same_rois_as(root, clean_run)


def test_kill_9_of_a_two_worker_run_s_parent_leaves_no_worker_and_resume_is_exact(
    tmp_path: Path, clean_run: Path
) -> None:
    """Only the parent is killed: its pool workers must follow it (PR_SET_PDEATHSIG)."""
    root = make_project(tmp_path / "killed", KILL_VIDEOS)
    process = start_run(root, workers=2)
    done = root / ".plankline" / "done"
    finished_before = freeze_once_done(process, done, 1)
    parent = psutil.Process(process.pid)
    descendants = parent.children(recursive=True)
    workers = [p for p in descendants if "spawn_main" in " ".join(p.cmdline())]
    try:
        assert len(workers) == 2, [p.cmdline() for p in descendants]
        assert finished_before < KILL_CHUNKS, "the kill must land mid-run"
        process.kill()  # kill -9 of the parent alone
        process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)  # thaw whatever is left of the group
        deadline = time.monotonic() + 5
        while not all(gone(p) for p in descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p.pid for p in descendants if not gone(p)]
        assert left == [], f"processes left behind by the killed run: {left}"
    finally:
        for p in descendants:  # the test failed: leave nothing behind
            with contextlib.suppress(psutil.Error):
                p.kill()
    resumed = run_batch(BatchSettings(project=root, chunk_frames=1, workers=2, fps=10.0))
    assert resumed.failures == []
    assert resumed.chunks_skipped == finished_before  # nothing moved after the freeze
    assert resumed.chunks_done == KILL_CHUNKS - finished_before
    assert_same_rois_as(root, clean_run)


def test_a_second_run_on_a_locked_project_fails_at_once_naming_it(tmp_path: Path) -> None:
    from plankline.cli import app

    root = make_project(tmp_path / "locked", {VIDEO_A: 3})
    args = ["run", str(root), "--chunk-frames", "3", "--workers", "1", "--set", "fps=10"]
    with Project(root).lock():  # what a running `plankline run` holds (an flock)
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 2, refused.output
        assert f"error: {root}: another plankline run is using this project" in (
            refused.output.splitlines()
        )
        assert list(Project(root).done_records()) == []  # it touched nothing
    ran = CliRunner().invoke(app, args)  # the lock dies with its holder
    assert ran.exit_code == 0, ran.output
    assert len(list(Project(root).done_records())) == 1


def test_retry_failed_redoes_failed_and_warned_chunks_once_their_cause_is_fixed(
    tmp_path: Path,
) -> None:
    from plankline.cli import app

    root = make_project(tmp_path / "retry", {VIDEO_A: 6, VIDEO_B: 6})
    good = (root / "raw" / VIDEO_B).read_bytes()
    (root / "raw" / VIDEO_B).write_bytes(good[: int(len(good) * 0.6)])  # ends inside frame 3
    settings = BatchSettings(project=root, chunk_frames=3, workers=1, fps=10.0)
    first = run_batch(settings)
    assert len(first.failures) == 1 and "frame 3" in first.failures[0]
    # B's first chunk is done, but an organism leaving it into frame 3 is lost: it says so
    (warned,) = [r for r in Project(root).done_records() if r["warning"]]
    assert warned["name"] == "20260101120010.000" and "frame 3" in warned["warning"]
    (root / "raw" / VIDEO_B).write_bytes(good)  # the cause is fixed (e.g. the copy redone)
    outputs = sorted(p for p in root.rglob("*") if p.is_file() and "summary" not in p.parts)
    stamps = {p: p.stat().st_mtime_ns for p in outputs if p.suffix in (".tar", ".zip")}

    again = run_batch(settings)  # without --retry-failed a failed chunk is left alone
    assert (again.chunks_done, again.chunks_skipped, again.failures) == (0, 4, [])
    assert len(list(Project(root).failed_records())) == 1

    args = ["run", str(root), "--chunk-frames", "3", "--workers", "1", "--set", "fps=10"]
    retried = CliRunner().invoke(app, [*args, "--retry-failed"])
    assert retried.exit_code == 0, retried.output
    lines = retried.output.splitlines()
    assert any(line.startswith("done: 2 chunks (2 already done), 6 frames") for line in lines)
    assert list(Project(root).failed_records()) == []
    assert len(list(Project(root).done_records())) == 4
    redone = {p for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    chunks = {p.name.rsplit(".", 1)[0] for p in redone}  # video A's outputs are untouched
    assert "20260101120010.000" in chunks <= {"20260101120010.000", "20260101120010.300"}
    assert all(not r["warning"] for r in Project(root).done_records())
    clean = make_project(tmp_path / "clean", {VIDEO_A: 6, VIDEO_B: 6})
    run_batch(BatchSettings(project=clean, chunk_frames=3, workers=1, fps=10.0))
    assert_same_rois_as(root, clean)


def test_a_16_bit_video_goes_through_the_whole_pipeline_like_its_8_bit_twin(
    tmp_path: Path,
) -> None:
    """FFV1 gray16 (what 12/16-bit cameras archive): found, measured, archived, classified,
    exported, and the same organisms as the 8-bit video with the same content."""
    from plankline.imaging.synth import synth_frames
    from plankline.imaging.video import probe_video, write_video

    frames, truth = synth_frames(6, seed=5, **SMALL)  # type: ignore[arg-type]
    frames = list(frames)  # an iterator: both videos need it
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    for root, codec, scale in ((eight, "rawvideo", None), (sixteen, "ffv1", 257)):
        (root / "raw").mkdir(parents=True)
        data = [f.astype(np.uint16) * scale for f in frames] if scale else frames
        write_video(root / "raw" / VIDEO_A, data, fps=10.0, codec=codec)
        report = run_batch(BatchSettings(project=root, chunk_frames=3, workers=1, fps=10.0))
        assert report.failures == [], report.failures
    assert probe_video(sixteen / "raw" / VIDEO_A).dtype == "uint16"
    table, table8 = rois_of(sixteen), rois_of(eight)
    score = score_detections(
        np.stack([truth.line, truth.column, truth.height, truth.width], 1),
        truth.area_px,
        np.stack([table[k] for k in ("line", "column", "bbox_height", "bbox_width")], 1),
        table["area"],
        min_area_px=SegmentParams().min_area_px,
    )
    assert score.recall >= 0.95 and score.precision >= 0.95, score
    t, d = match_boxes(
        np.stack([table8[k] for k in ("line", "column", "bbox_height", "bbox_width")], 1),
        np.stack([table[k] for k in ("line", "column", "bbox_height", "bbox_width")], 1),
        min_iou=0.9,
    )
    assert len(t) >= 0.95 * max(len(table8["image"]), len(table["image"]))
    np.testing.assert_allclose(table["area"][d], table8["area"][t], rtol=0.05)
    for record in Project(sixteen).done_records():
        paths = Project(sixteen).outputs(record["name"])
        ids, probs, _ = read_classification_csv(paths["classification"])
        assert len(ids) == record["rois"] > 0
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
        assert validate_ecotaxa_zip(paths["ecotaxa"]) == []
        with tarfile.open(paths["rois"]) as tar:
            assert len(tar.getmembers()) == len(ids)


def test_settings_precedence_cli_over_env_over_ini(tmp_path: Path, monkeypatch) -> None:
    ini = tmp_path / "cgrb.ini"
    ini.write_text("[plankline]\nworkers = 3\nchunk_frames = 50\nthreshold = 180\n")
    monkeypatch.setenv("PLANKLINE_CHUNK_FRAMES", "70")
    settings = BatchSettings(config=ini, threshold=170)
    assert (settings.workers, settings.chunk_frames, settings.threshold) == (3, 70, 170)
    ini.write_text("[plankline]\nworkrs = 3\n")
    with pytest.raises(ValueError, match="workrs"):
        BatchSettings(config=ini)


def test_run_without_raw_folder_is_one_clear_error(tmp_path: Path) -> None:
    from plankline.cli import app

    result = CliRunner().invoke(app, ["run", str(tmp_path)])
    assert result.exit_code == 2
    assert "no raw/ folder" in result.output


def test_run_on_the_raw_folder_itself_says_which_folder_to_give_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """``plankline run cruise/raw`` (an easy slip) names the project folder to give, and
    leaves no log, lock or output folder among the videos."""
    from plankline.cli import app

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "20180706170805.476.avi").write_bytes(b"not read")
    result = CliRunner().invoke(app, ["run", str(raw)])
    assert result.exit_code == 2
    assert "no raw/ folder" in result.output and "holds videos" in result.output
    assert f"plankline run {tmp_path}" in " ".join(result.output.split())
    assert sorted(p.name for p in raw.iterdir()) == ["20180706170805.476.avi"]
