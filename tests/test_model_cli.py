"""``plankline classify`` on folders and ROI tars, with bad inputs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from plankline.cli import app
from plankline.imaging.synth import make_roi_library
from plankline.model.data import list_images, read_image
from plankline.model.export import export_model
from plankline.model.infer import Classifier, read_classification_csv
from plankline.model.train import TrainConfig, checkpoint_path, load_checkpoint, train
from plankline.outputs.rois import write_roi_tar
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_roi_library(root / "lib", n_per_class=4, seed=4)
    train(
        TrainConfig(
            library=str(root / "lib"),
            out=str(root / "w"),
            stop=1,
            bs=8,
            canvas=32,
            width=4,
            layers=4,
            min_epoch_images=16,
            vsp=0,
        )
    )
    export_model(checkpoint_path(root / "w", 1), root / "model")
    return root / "model"


def test_classify_folder_skips_unreadable_and_empty_files_naming_them(
    model_dir: Path, tmp_path: Path
) -> None:
    rois = tmp_path / "rois" / "sub"
    rois.mkdir(parents=True)
    img = np.full((30, 40), 210, np.uint8)
    img[10:20, 10:30] = 40
    cv2.imwrite(str(rois / "good1.png"), img)
    cv2.imwrite(str(rois / "good2.jpg"), np.full((3000, 20), 200, np.uint8))  # huge: shrunk
    (rois / "broken.png").write_bytes(b"\x89PNG garbage")
    (rois / "empty.png").write_bytes(b"")
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(
        app, ["classify", "-i", str(tmp_path / "rois"), "-o", str(out), "--model", str(model_dir)]
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()  # each warning whole on its line, however long the path
    assert f"warning: unreadable image {rois / 'broken.png'}: skipped" in lines, res.output
    assert f"warning: unreadable image {rois / 'empty.png'}: skipped" in lines, res.output
    ids, probs, names = read_classification_csv(out)
    assert sorted(ids) == ["good1", "good2"]
    assert names == Classifier.load(model_dir).class_names
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_classify_tars_writes_one_csv_per_chunk_matching_predict(
    model_dir: Path, tmp_path: Path, workers: int
) -> None:
    """Each chunk's CSV equals predict(), whether one process classifies or a pool does;
    an unreadable tar fails alone (named, exit 1) and a truncated one keeps what it holds."""
    lib = model_dir.parent / "lib"
    files = list_images(lib)
    seg = tmp_path / "segmentation"
    seg.mkdir()
    chunks = {
        "20260101120000.000": files[:5],
        "20260101120100.000": files[5:9],
        "20260101120300.000": files[9:14],
    }
    for name, fs in chunks.items():
        write_roi_tar(seg / f"{name}.tar", [f.stem for f in fs], [read_image(f) for f in fs])
    (seg / "20260101120200.000.tar").write_bytes(b"not a tar at all" * 100)
    truncated = seg / "20260101120300.000.tar"
    with tarfile.open(truncated) as t:
        cut = t.getmembers()[1].offset_data + 10  # first member whole, the second cut
    truncated.write_bytes(truncated.read_bytes()[:cut])
    out = tmp_path / "classification"
    res = CliRunner().invoke(
        app,
        [
            "classify",
            "-i",
            str(seg),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--cpu",
            "--workers",
            str(workers),
        ],
    )
    lines = res.output.splitlines()  # whole lines, whatever the path length and COLUMNS
    assert res.exit_code == 1, res.output
    (failed,) = [line for line in lines if line.startswith("failed: ")]
    assert failed.startswith("failed: 20260101120200.000.tar: not a readable tar archive")
    assert f"classified 10 ROIs from 3 of 4 tar(s) into {out}/" in lines
    (warned,) = [line for line in lines if "archive is corrupt or truncated" in line]
    assert warned.startswith("warning: 20260101120300.000.tar: archive is corrupt"), warned
    assert not (out / "20260101120200.000.csv").exists()
    clf = Classifier.load(model_dir)
    chunks["20260101120300.000"] = chunks["20260101120300.000"][:1]
    for name, fs in chunks.items():
        ids, probs, _ = read_classification_csv(out / f"{name}.csv")
        assert ids == [f.stem for f in fs]
        ref = clf.predict([read_image(f) for f in fs])
        np.testing.assert_allclose(probs, ref, atol=2e-6)


def test_classify_folder_in_a_pool_keeps_the_files_order(model_dir: Path, tmp_path: Path) -> None:
    files = list_images(model_dir.parent / "lib")
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(
        app,
        [
            "classify",
            "-i",
            str(model_dir.parent / "lib"),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--workers",
            "3",
            "--batch-size",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    ids, probs, _ = read_classification_csv(out)
    assert ids == [f.stem for f in files]
    ref = Classifier.load(model_dir).predict([read_image(f) for f in files])
    np.testing.assert_allclose(probs, ref, atol=2e-6)


def test_kill_9_of_classify_s_parent_leaves_no_worker_and_a_rerun_is_complete(
    model_dir: Path, tmp_path: Path
) -> None:
    """Only the parent of a 2-worker ``classify`` is killed: its workers must follow it."""
    files = list_images(model_dir.parent / "lib")
    images = [read_image(f) for f in files]
    seg, out = tmp_path / "segmentation", tmp_path / "classification"
    seg.mkdir()
    n_tars, per_tar = 40, 150  # ~2 s of work on 2 workers: the freeze lands long before the end
    for t in range(n_tars):
        picks = [(t * per_tar + i) % len(files) for i in range(per_tar)]
        write_roi_tar(
            seg / f"20260101{t:06d}.000.tar",
            [f"roi{t}_{i}" for i in range(per_tar)],
            [images[k] for k in picks],
        )
    command = [sys.executable, "-m", "plankline.cli", "classify", "-i", str(seg), "-o", str(out)]
    command += ["--model", str(model_dir), "--cpu", "--workers", "2"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("*.csv")):  # work has started: a worker wrote a chunk's CSV
            assert process.poll() is None, f"classify exited early ({process.returncode})"
            assert time.monotonic() < deadline, "no CSV written in 180 s"
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGSTOP)  # freeze: the state counted is the state killed
        written = len(list(out.glob("*.csv")))
        descendants = psutil.Process(process.pid).children(recursive=True)
        workers = [p for p in descendants if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in descendants]
        assert written < n_tars, "the kill must land mid-run"
        process.kill()  # kill -9 of the parent alone
        process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while not all(_gone(p) for p in descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.pid for p in descendants if not _gone(p)] == [], "workers left behind"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for p in descendants:  # the test failed: leave nothing behind
            with contextlib.suppress(psutil.Error):
                p.kill()
    res = CliRunner().invoke(
        app, ["classify", "-i", str(seg), "-o", str(out), "--model", str(model_dir), "--cpu"]
    )
    assert res.exit_code == 0, res.output
    assert f"classified {n_tars * per_tar} ROIs from {n_tars} of {n_tars} tar(s)" in res.output
    ids, probs, _ = read_classification_csv(out / "20260101000007.000.csv")
    assert ids == [f"roi7_{i}" for i in range(per_tar)]
    ref = Classifier.load(model_dir).predict(
        [images[(7 * per_tar + i) % len(files)] for i in range(per_tar)]
    )
    np.testing.assert_allclose(probs, ref, atol=2e-6)


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_classify_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "classify",
            "-i",
            str(tmp_path),
            "-o",
            str(tmp_path / "x.csv"),
            "--model",
            str(tmp_path / "nope"),
        ],
    )
    assert res.exit_code == 2
    assert f"error: model folder {tmp_path / 'nope'} lacks model.onnx" in res.output.splitlines()


def test_train_and_export_print_whole_lines_size_gate_and_forest(tmp_path: Path) -> None:
    # a library in a long folder with an unreadable image: the warning names it on one line
    lib = tmp_path / ("deep_folder_name_" * 6) / "lib [2026]"
    make_roi_library(lib, n_per_class=3, seed=5)
    (lib / "copepod" / "broken.png").write_bytes(b"\x89PNG garbage")
    w, model = tmp_path / "w", tmp_path / "model"
    args = ["--stop", "1", "--canvas", "32", "--width", "4", "--min-epoch-images", "16"]
    res = CliRunner().invoke(app, ["train", str(lib), "--out", str(w), *args, "--contrast", "1"])
    assert res.exit_code != 0 and "augment contrast must be in [0, 1), got 1.0" in res.output
    res = CliRunner().invoke(app, ["train", str(lib), "--out", str(w), *args, "--forest", "1"])
    assert res.exit_code != 0 and "forest (its weight) must be in [0, 1), got 1.0" in res.output
    args += ["--forest", "0.3"]
    res = CliRunner().invoke(app, ["train", str(lib), "--out", str(w), *args, "--contrast", "0.6"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(checkpoint_path(w, 1))["config"]["augment"]["contrast"] == 0.6
    lines = res.output.splitlines()
    assert f"warning: unreadable image {lib / 'copepod' / 'broken.png'}: skipped" in lines
    assert f"trained 1 epoch(s); weights in {w}" in lines
    assert f"random forest (weight 0.3) in {w / 'forest.onnx'}" in lines
    res = CliRunner().invoke(app, ["export", str(w), "--out", str(model)])
    assert res.exit_code == 0, res.output
    gate = Classifier.load(model).card.min_object_px
    assert gate > 1 and f"; size gate {gate} px (98 % of its training objects)" in res.output
    assert Classifier.load(model).meta["forest"]["weight"] == 0.3  # merged into model.onnx


def test_train_cli_defaults_are_the_training_defaults() -> None:
    """The CLI repeats TrainConfig's defaults (it imports no torch at start-up): keep them equal."""
    import inspect
    from dataclasses import fields

    from plankline.cli import train as train_cmd

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    params = inspect.signature(train_cmd).parameters
    shared = [n for n in params if n in defaults and n not in ("library", "out")]
    assert len(shared) >= 19
    for name in shared:
        assert params[name].default == defaults[name], name


def test_classify_on_a_projects_tars_gives_the_exports_of_a_classifying_run(
    tmp_path: Path,
) -> None:
    """The HPC path: ``run --no-classify`` then ``classify`` on segmentation/ (measurements
    beside) ends with ``plankline run``'s EcoTaxa exports, predicted classes and all, and a
    second ``classify`` changes nothing."""
    import zipfile

    from plankline.batch.run import run_batch
    from plankline.config import BatchSettings
    from plankline.imaging.synth import write_synth_video
    from plankline.outputs.ecotaxa import validate_ecotaxa_zip

    def members(path: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist()}

    size = {"height": 256, "width": 384, "density": 12.0, "size_range": (8.0, 90.0)}
    video = tmp_path / "20260101120000.000.avi"
    write_synth_video(video, 4, seed=3, **size)
    projects = {}
    for name, classify in (("run", True), ("hpc", False)):
        (tmp_path / name / "raw").mkdir(parents=True)
        (tmp_path / name / "raw" / video.name).symlink_to(video)
        settings = BatchSettings(
            project=tmp_path / name, chunk_frames=2, workers=1, classify=classify
        )
        assert run_batch(settings).failures == []
        projects[name] = tmp_path / name
    zips = sorted((projects["run"] / "ecotaxa").glob("*.zip"))
    assert len(zips) == 2
    for z in zips:
        tsv = next(v for k, v in members(z).items() if k.endswith(".tsv")).decode()
        assert "object_annotation_category" in tsv.splitlines()[0]
        assert members(projects["hpc"] / "ecotaxa" / z.name) != members(z)
    argv = ["classify", "-i", str(projects["hpc"] / "segmentation"), "--workers", "1"]
    for _ in range(2):
        res = CliRunner().invoke(app, [*argv, "-o", str(projects["hpc"] / "classification")])
        assert res.exit_code == 0, res.output
        for z in zips:
            assert members(projects["hpc"] / "ecotaxa" / z.name) == members(z), z.name
            assert validate_ecotaxa_zip(projects["hpc"] / "ecotaxa" / z.name) == []
    for csv in sorted((projects["run"] / "classification").glob("*.csv")):
        assert (projects["hpc"] / "classification" / csv.name).read_bytes() == csv.read_bytes()
