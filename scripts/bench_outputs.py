"""Benchmark the output writers/readers: ms per 1000 ROIs, baseline printed beside the fast path.

Crops are 20-120 px windows cut from the real ISIIS frame in
``../shared/data`` (the sizes ISIIS segmentation produces; real sensor noise
matters for PNG), or synthetic blobs when the data is absent. Baselines:
``cv2.imencode`` with OpenCV's default PNG settings for the tar writer, and
extracting the whole tar to disk then reading the files (what the seed's
pull_images did) for the reader.

Usage: python scripts/bench_outputs.py [--n 2000] [--rows 20000 --classes 100]

The last lines: a measurement-like table of ``--rows`` rows written by ``write_csv``
(columns formatted in NumPy) beside one Python ``%`` per row, at %.6g (the CSV) and %.9g
(the EcoTaxa TSV), bytes compared; and a classification table (``--prob-classes``
probabilities at %.6f, the default model's 121) by ``write_classification_csv`` beside
``csv.writer`` with one ``f"{v:.6f}"`` per value (the writer before it), and read back by
``read_classification_csv`` beside ``csv.reader`` with a ``float()`` per value (the reader
before it).
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from plankline.imaging.flatfield import FlatField
from plankline.outputs.naming import roi_id
from plankline.outputs.pull import pull_images, select_images
from plankline.outputs.rois import encode_image, iter_roi_tar, write_roi_tar
from plankline.outputs.tables import atomic_write, read_csv, write_csv

FRAME = Path(__file__).resolve().parents[2] / "shared/data/isiis-frames/mbari-isiis-raw-2048.jpg"


def crops(n: int, seed: int = 0, raw: bool = False) -> list[np.ndarray]:
    """``n`` windows of the real frame, flat-fielded as the pipeline's crops are (``raw``:
    of the camera's raw frame)."""
    rng = np.random.default_rng(seed)
    frame = cv2.imread(str(FRAME), cv2.IMREAD_GRAYSCALE) if FRAME.exists() else None
    if frame is not None:
        if not raw:
            frame = FlatField(mode="both").correct(frame)
        hw = rng.integers(20, 120, (n, 2))
        yx = rng.integers(0, 2048 - 120, (n, 2))
        kind = "raw" if raw else "flat-fielded"
        print(f"crops: {n} windows of the real ISIIS frame {FRAME.name}, {kind}")
        return [frame[y : y + h, x : x + w].copy() for (h, w), (y, x) in zip(hw, yx, strict=True)]
    print(f"crops: {n} synthetic blobs ({FRAME} not found)")
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(20, 120, 2))
        img = np.full((h, w), 200, np.uint8)
        cv2.ellipse(
            img,
            (w // 2, h // 2),
            (max(2, w // 3), max(2, h // 4)),
            float(rng.uniform(0, 180)),
            0,
            360,
            60,
            -1,
        )
        img = cv2.add(img, rng.integers(0, 8, (h, w), dtype=np.uint8))
        out.append(img)
    return out


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument(
        "--prob-classes", type=int, default=121, help="classes of the probability table"
    )
    ap.add_argument("--raw", action="store_true", help="crops of the raw frame, not flat-fielded")
    a = ap.parse_args()
    imgs = crops(a.n, raw=a.raw)
    ids = [roi_id("20180706170805.476", i // 50, i * 40, i % 2000, i) for i in range(a.n)]
    k = 1000 / a.n
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.tar"
        t_fast = best_of(lambda: write_roi_tar(p, ids, imgs))
        size_fast = p.stat().st_size
        t_enc = best_of(lambda: [encode_image(c) for c in imgs])
        t_base = best_of(lambda: [cv2.imencode(".png", c)[1] for c in imgs])
        t_l1 = best_of(lambda: [encode_image(c, png_fast=False) for c in imgs])
        size_l1 = sum(len(encode_image(c, png_fast=False)) for c in imgs)
        size_base = sum(cv2.imencode(".png", c)[1].size for c in imgs)
        size_enc = sum(len(encode_image(c)) for c in imgs)
        sub = [
            cv2.IMWRITE_PNG_COMPRESSION, 1,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB,
        ]  # fmt: skip
        t_sub = best_of(lambda: [cv2.imencode(".png", c, sub)[1] for c in imgs])
        size_sub = sum(cv2.imencode(".png", c, sub)[1].size for c in imgs)
        print(
            f"write_roi_tar (encode+tar+fsync) {t_fast * 1e3 * k:7.1f} ms/1000 ROIs, "
            f"{size_fast / a.n:6.0f} B/ROI in the tar"
        )
        print(
            f"encode_image (png_fast)          {t_enc * 1e3 * k:7.1f} ms/1000 ROIs, "
            f"{size_enc / a.n:6.0f} B/ROI"
        )
        print(
            f"Huffman-only with the SUB filter {t_sub * 1e3 * k:7.1f} ms/1000 ROIs, "
            f"{size_sub / a.n:6.0f} B/ROI   (png_fast has no filter: size x"
            f"{size_enc / size_sub:.2f})"
        )
        print(
            f"baseline cv2.imencode defaults   {t_base * 1e3 * k:7.1f} ms/1000 ROIs, "
            f"{size_base / a.n:6.0f} B/ROI   -> speed-up x{t_base / t_enc:.2f}, "
            f"size x{size_enc / size_base:.2f}"
        )
        print(
            f"baseline level 1, adaptive filt. {t_l1 * 1e3 * k:7.1f} ms/1000 ROIs, "
            f"{size_l1 / a.n:6.0f} B/ROI   -> speed-up x{t_l1 / t_enc:.2f}"
        )
        t_read = best_of(lambda: sum(1 for _ in iter_roi_tar(p)))
        want = set(ids[::20])
        t_sel = best_of(lambda: sum(1 for _ in iter_roi_tar(p, want)))

        def extract_all() -> None:
            out = Path(d) / "x"
            with tarfile.open(p) as t:
                t.extractall(out, filter="data")
            for f in out.iterdir():
                cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)

        t_ext = best_of(extract_all)
        print(f"iter_roi_tar all (stream+decode) {t_read * 1e3 * k:7.1f} ms/1000 ROIs")
        print(f"iter_roi_tar 5% of members       {t_sel * 1e3 * k:7.1f} ms/1000 ROIs in the tar")
        print(
            f"baseline extractall + imread     {t_ext * 1e3 * k:7.1f} ms/1000 ROIs   "
            f"-> stream speed-up x{t_ext / t_read:.2f}"
        )

        rng = np.random.default_rng(1)
        probs = rng.dirichlet(np.full(a.classes, 0.3), a.rows)
        cols = {"image": [f"{i}.png" for i in range(a.rows)]}
        cols.update({f"class_{j:03d}": probs[:, j] for j in range(a.classes)})
        c = Path(d) / "c.csv"
        t_w = best_of(lambda: write_csv(c, cols), 1)
        t_r = best_of(lambda: read_csv(c, dtypes={"image": str}), 1)
        names = [f"class_{j:03d}" for j in range(a.classes)]
        t_s = best_of(lambda: select_images(probs, names, names[:10], best=True))
        print(
            f"CSV {a.rows} x {a.classes}: write {t_w:.2f} s, read {t_r:.2f} s, "
            f"select -b {t_s * 1e3:.1f} ms"
        )
        bench_pull(Path(d), imgs, a.classes)
        bench_table_text(a.rows)
        bench_classification_text(a.rows, a.prob_classes)


def measurement_like(rows: int, seed: int = 3) -> dict[str, np.ndarray]:
    """A table shaped like ``measure_rois``'s: whole-number areas and boxes, lengths of 1-500
    px, ratios in 0-1, signed skews and angles, Hu moments down to 1e-12 (exponent form)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {"image": np.array([f"roi_{i:07d}" for i in range(rows)], object)}
    for k in range(6):
        cols[f"count_{k}"] = rng.integers(1, 5000, rows).astype(np.float64)
    for k in range(10):
        cols[f"length_{k}"] = rng.lognormal(2.5, 1.0, rows)
    for k in range(6):
        cols[f"ratio_{k}"] = rng.random(rows)
    for k in range(4):
        cols[f"signed_{k}"] = rng.normal(0, 2, rows)
    for k in range(7):
        cols[f"hu_{k}"] = rng.lognormal(-8 - 2 * k, 2.0, rows) * rng.choice([-1, 1], rows)
    return cols


def bench_table_text(rows: int) -> None:
    """write_csv (columns formatted in NumPy) beside one Python ``%`` per row, the writer
    before it, on a measurement-like table; the CSV's bytes must be the same."""
    cols = measurement_like(rows)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.csv"
        for precision in (6, 9):
            spec = f"%.{precision}g"
            t_ours = best_of(lambda spec=spec: write_csv(path, cols, float_format=spec))
            ours = path.read_bytes()
            row = ",".join("%s" if v.dtype == object else spec for v in cols.values()) + "\n"

            def rows_python(row: str = row) -> None:
                lists = [v.tolist() for v in cols.values()]
                with atomic_write(Path(d) / "base.csv", "w", newline="") as f:
                    f.write(",".join(cols) + "\n")
                    f.write("".join(map(row.__mod__, zip(*lists, strict=True))))

            t_base = best_of(rows_python)
            same = (Path(d) / "base.csv").read_bytes() == ours
            print(
                f"table text {rows} x {len(cols)} at {spec}: column-wise {t_ours * 1e3:6.1f} ms, "
                f"one % per row {t_base * 1e3:6.1f} ms (both written with fsync) -> "
                f"x{t_base / t_ours:.2f}, bytes {'identical' if same else 'DIFFER'}"
            )


def bench_classification_text(rows: int, classes: int) -> None:
    """write_classification_csv (write_csv, probabilities formatted in NumPy) beside
    csv.writer with one ``f"{v:.6f}"`` per value; the text must be the same."""
    import csv

    from plankline.model.infer import (
        read_classification_csv,
        read_top_classes,
        thresholded_classes,
        write_classification_csv,
    )

    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.full(classes, 0.1), rows).astype(np.float32)
    names = [f"class_{k:03d}" for k in range(classes)]
    ids = [f"20180706170805.476_f{i // 545}_l{i}_x0_r{i}" for i in range(rows)]
    thresholds = dict.fromkeys(names, 0.5)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.csv"
        t_ours = best_of(lambda: write_classification_csv(path, ids, probs, names, thresholds))

        def per_value() -> None:
            thr = thresholded_classes(probs, names, thresholds)
            with atomic_write(Path(d) / "base.csv", "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["image", *names, "top_class", "top_probability", "thresholded_class"])
                for i, rid in enumerate(ids):
                    row = probs[i]
                    k = int(row.argmax())
                    w.writerow([rid, *(f"{v:.6f}" for v in row), names[k], f"{row[k]:.6f}", thr[i]])

        t_base = best_of(per_value)
        same = (Path(d) / "base.csv").read_bytes() == path.read_bytes()
        print(
            f"classification table {rows} x {classes} probabilities at %.6f: column-wise "
            f"{t_ours * 1e3:6.1f} ms, csv.writer with one format per value {t_base * 1e3:6.1f} ms "
            f"(both with fsync) -> x{t_base / t_ours:.2f}, "
            f"bytes {'identical' if same else 'DIFFER'}"
        )

        def per_value_read() -> np.ndarray:  # the reader before read_csv
            with path.open(newline="") as f:
                r = csv.reader(f)
                next(r)
                rows = [[float(v) for v in rec[1 : 1 + classes]] for rec in r]
                return np.asarray(rows, np.float32)

        t_read = best_of(lambda: read_classification_csv(path))
        t_read_base = best_of(per_value_read)
        t_top = best_of(lambda: read_top_classes(path))
        same = np.array_equal(read_classification_csv(path)[1], per_value_read())
        print(
            f"  read back: read_classification_csv {t_read * 1e3:6.1f} ms, csv.reader with a "
            f"float() per value {t_read_base * 1e3:6.1f} ms -> x{t_read_base / t_read:.2f}, "
            f"values {'identical' if same else 'DIFFER'}; the top classes alone "
            f"(read_top_classes, what the run's summary counts) {t_top * 1e3:.1f} ms"
        )


def bench_pull(d: Path, imgs: list[np.ndarray], n_classes: int, n_chunks: int = 4) -> None:
    """pull-images (-p 0.2, 10 of n classes) vs the seed's way: untar everything, copy matches."""
    rng = np.random.default_rng(2)
    csvs, tars = d / "csvs", d / "tars"
    csvs.mkdir()
    tars.mkdir()
    names = [f"taxon_{j:03d}" if j >= 10 else f"fish_{j}" for j in range(n_classes)]
    for c in range(n_chunks):
        chunk = f"20180706170{805 + 30 * c}.476"
        ids = [roi_id(chunk, i // 50, i * 40, i % 2000, i) for i in range(len(imgs))]
        write_roi_tar(tars / f"{chunk}.tar", ids, imgs)
        probs = rng.dirichlet(np.full(n_classes, 0.05), len(imgs))
        write_csv(csvs / f"{chunk}.csv", {"image": ids, **dict(zip(names, probs.T, strict=True))})

    def ours() -> int:
        out = d / f"out{time.perf_counter_ns()}"
        return pull_images(
            taxa=["fish"], threshold=0.2, input_drive=csvs, raw_tars=tars, output=out
        ).n_written

    def seed_way() -> int:
        out, n = d / f"seed{time.perf_counter_ns()}", 0
        for csv_path in sorted(csvs.iterdir()):
            t = read_csv(csv_path, dtypes={"image": str})
            tmp = out / "_untar"
            with tarfile.open(tars / f"{csv_path.stem}.tar") as tf:
                tf.extractall(tmp, filter="data")
            for cls in names[:10]:
                (out / cls).mkdir(parents=True, exist_ok=True)
                for r in np.flatnonzero(t[cls] > 0.2):
                    src = tmp / f"{t['image'][r]}.png"
                    (out / cls / src.name).write_bytes(src.read_bytes())
                    n += 1
            shutil.rmtree(tmp)
        return n

    t_ours = best_of(ours, 2)
    t_seed = best_of(seed_way, 2)
    n = ours()
    assert n == seed_way()
    total = n_chunks * len(imgs)
    print(
        f"pull-images {n_chunks} chunks x {len(imgs)} ROIs, {n_classes} classes, -p 0.2 -t fish "
        f"({n} files): {t_ours:.2f} s = {t_ours / total * 1e6:.0f} us per ROI in the tars"
    )
    print(
        f"baseline untar all + copy (seed way): {t_seed:.2f} s -> speed-up x{t_seed / t_ours:.2f}"
    )


if __name__ == "__main__":
    main()
