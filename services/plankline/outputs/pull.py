"""``pull-images``: copy the ROIs of chosen taxa out of the chunk tars (seed's pull_images.py).

Typical use: build a new training library, or check the classifier against an
expert. For every classification CSV (``classification/<chunk>.csv``, or the
seed's ``<chunk>-library_<name>.csv``), pick the images of the wanted taxa,
find the chunk's ROI tar (``<chunk>.tar`` or ``<chunk>.tar.gz``; matched by
the ISIIS timestamp in both names, or else by the chunk name), open it once
for all taxa and stream only the wanted members into::

    OUT/<class name>/<member base name>      e.g. OUT/fish_larva/<roi_id>.png

With ``-p`` an image can land in several class folders (one per class above
the threshold); with ``-b`` in at most one.

Selection semantics (seed 000, "Image extraction tool"):

- ``taxa`` are substrings: ``fish`` matches every class containing ``fish``
  (case-sensitive, like the seed); ``strict=True`` matches whole names only.
- ``threshold=P``: an image goes to every matched class whose probability is
  strictly above ``P``.
- ``best=True``: an image goes to its top class, if that class is matched.
- ``min_images=N``: a tar is skipped when fewer than ``N`` images are wanted
  from it (opening a tar is the slow part).
- class columns must be identical in all CSVs unless ``different_columns``.

The CSV layout is ``image,<class1>,...,<classN>`` optionally followed by
``top_class,top_probability,thresholded_class`` (or any column named
``top_*``/``thresholded_*``), which are not classes.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plankline.outputs.naming import parse_timestamp
from plankline.outputs.rois import iter_roi_tar_bytes
from plankline.outputs.tables import read_csv, read_header

__all__ = [
    "PullError",
    "PullReport",
    "chunk_key",
    "find_class_columns",
    "find_tar",
    "list_csvs",
    "match_taxa",
    "pull_images",
    "select_images",
]

_NON_CLASS = re.compile(r"^(top_|thresholded_)|^(top|thresholded)$")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class PullError(ValueError):
    """A user error that stops pull-images (bad output folder, mismatched CSVs...)."""


def chunk_key(filename: str | os.PathLike[str]) -> str:
    """The key that pairs a CSV with its tar: the ISIIS timestamp, else the chunk name.

    >>> chunk_key("excsvs/20180706170805.476-library_bigcam.csv")
    '20180706170805.476'
    >>> chunk_key("dive3-c0002.tar.gz")
    'dive3-c0002'
    """
    base = os.path.basename(os.fspath(filename))
    t = parse_timestamp(base)
    if t is not None:
        return re.search(r"(?<![0-9])[0-9]{14}\.[0-9]{3}(?![0-9])", base).group(0)  # type: ignore[union-attr]
    for suffix in (*_TAR_SUFFIXES, ".csv"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    return re.sub(r"-library.*$", "", base)


def find_class_columns(header: Sequence[str], *, source: str = "CSV") -> list[str]:
    """Class names of a classification CSV header: the columns after ``image``, before extras.

    Raises
    ------
    PullError
        If the first column is not ``image`` or there is no class column.
    """
    if not header or header[0].strip().lower() != "image":
        first = header[0] if header else None
        raise PullError(f"{source}: first column must be 'image', got {first!r}")
    classes: list[str] = []
    for name in header[1:]:
        if _NON_CLASS.search(name):
            break
        classes.append(name)
    if not classes:
        raise PullError(f"{source}: no class columns after 'image'")
    return classes


def match_taxa(classes: Sequence[str], taxa: Iterable[str], *, strict: bool = False) -> list[str]:
    """Classes matched by the search strings, grouped by search string, in column order.

    >>> match_taxa(["fish_a", "protist_x", "fish_b"], ["protist", "fish"])
    ['protist_x', 'fish_a', 'fish_b']
    """
    out: list[str] = []
    for t in taxa:
        for c in classes:
            if (c == t if strict else t in c) and c not in out:
                out.append(c)
    return out


def select_images(
    probs: np.ndarray,
    classes: Sequence[str],
    wanted: Sequence[str],
    *,
    threshold: float | None = None,
    best: bool = False,
) -> dict[str, np.ndarray]:
    """Rows of a probability table to extract, per wanted class.

    Parameters
    ----------
    probs : np.ndarray, shape (n_images, n_classes)
        Class probabilities, columns in ``classes`` order.
    classes : sequence of str
        All class names (the argmax for ``best`` runs over all of them).
    wanted : sequence of str
        Classes to extract (from :func:`match_taxa`).
    threshold : float, optional
        Select rows whose probability for the class is > threshold.
    best : bool
        Select rows whose top class is the class. Exactly one of
        ``threshold`` and ``best`` must be given.

    Returns
    -------
    dict of str to np.ndarray
        Wanted class -> sorted row indices (int64); every wanted class is a key.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must be (n, {len(classes)}), got {probs.shape}")
    if (threshold is None) == (not best):
        raise ValueError("give exactly one of threshold= or best=True")
    index = {c: i for i, c in enumerate(classes)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise ValueError(f"wanted classes not in the table: {missing}")
    if best:
        top = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, np.int64)
        return {w: np.flatnonzero(top == index[w]) for w in wanted}
    assert threshold is not None
    return {w: np.flatnonzero(probs[:, index[w]] > threshold) for w in wanted}


def list_csvs(input_dir: str | os.PathLike[str]) -> list[Path]:
    """Classification CSVs in a folder (not recursive), sorted by name."""
    d = Path(input_dir)
    if not d.is_dir():
        raise PullError(f"input drive {d} is not a directory")
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".csv")


def find_tar(tar_dir: str | os.PathLike[str], key: str) -> Path | None:
    """The ROI tar of a chunk key in ``tar_dir`` (``.tar`` preferred over ``.tar.gz``)."""
    d = Path(tar_dir)
    for suffix in _TAR_SUFFIXES:
        p = d / f"{key}{suffix}"
        if p.is_file():
            return p
    # ISIIS keys may carry extra text around the stamp (e.g. camera name): match the stamp.
    if parse_timestamp(key) is not None:
        for p in sorted(d.iterdir()):
            if p.name.lower().endswith(_TAR_SUFFIXES) and chunk_key(p.name) == key:
                return p
    return None


def _image_key(name: str) -> str:
    """CSV ``image`` cell -> tar member id: base name without image extension."""
    base = name.strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff") else base


def _safe_dir(name: str) -> str:
    return re.sub(r"[/\\\x00]", "_", name).strip() or "_"


@dataclass
class PullReport:
    """What a pull did: counts per class, per CSV, and what was missing."""

    sub_taxa: list[str] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)  # CSV -> images selected
    written: dict[str, int] = field(default_factory=dict)  # class -> files written
    skipped_min_images: list[str] = field(default_factory=list)
    missing_tars: list[str] = field(default_factory=list)
    missing_images: int = 0

    @property
    def n_written(self) -> int:
        return sum(self.written.values())


def _prepare_output(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise PullError(f"output {out} exists and is not a directory")
        if any(out.iterdir()):
            raise PullError(f"output directory {out} must be empty or not exist")
    out.mkdir(parents=True, exist_ok=True)


def pull_images(
    *,
    taxa: Sequence[str],
    output: str | os.PathLike[str],
    raw_tars: str | os.PathLike[str],
    input_drive: str | os.PathLike[str] | None = None,
    input_csv: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    best: bool = False,
    strict: bool = False,
    min_images: int = 0,
    different_columns: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> PullReport:
    """Extract the ROIs of chosen taxa from chunk tars into ``output/<class>/``.

    Parameters mirror the seed's options (module docstring): ``taxa`` (-t),
    ``threshold`` (-p) xor ``best`` (-b), ``input_drive`` (-d) xor
    ``input_csv`` (-c), ``output`` (-o, must be empty or absent), ``raw_tars``
    (-r), ``min_images`` (-m), ``different_columns`` (-dc), ``strict`` (-s).
    ``log`` receives the same progress lines the seed prints.

    Returns
    -------
    PullReport

    Raises
    ------
    PullError
        Bad option combination, non-empty output, unreadable CSV header,
        class columns differing between CSVs without ``different_columns``,
        or no class matching the taxa.

    Warns
    -----
    UserWarning
        A CSV without a tar, or selected images missing from their tar.
    """
    if not taxa:
        raise PullError("give at least one taxon (-t)")
    if (threshold is None) == (not best):
        raise PullError("give exactly one of -p/--probability-taxon or -b/--best-taxon")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise PullError(f"-p threshold must be within 0..1, got {threshold}")
    if (input_drive is None) == (input_csv is None):
        raise PullError("give exactly one of -d/--input-drive or -c/--input-csv")
    if min_images < 0:
        raise PullError(f"-m must be >= 0, got {min_images}")
    tar_dir = Path(raw_tars)
    if not tar_dir.is_dir():
        raise PullError(f"raw tar directory {tar_dir} is not a directory")
    if input_drive is not None:
        csvs = list_csvs(input_drive)
        log(f"Input Drive: {input_drive}")
    else:
        csv_path = Path(input_csv)  # type: ignore[arg-type]
        if not csv_path.is_file():
            raise PullError(f"input CSV {csv_path} does not exist")
        csvs = [csv_path]
        log(f"Input CSV: {input_csv}")
    log(f"Number of Input CSVs: {len(csvs)}")
    log(f"Raw tar Directory: {raw_tars}")
    log(f"Output Directory: {output}")
    log(f"Minimum images needed to unzip: {min_images}")
    out = Path(output)
    _prepare_output(out)
    if best:
        log("----- Finding chosen taxon where they are the top probability -----")
    else:
        log(f"----- Finding chosen taxon with probabilities above {threshold} -----")

    report = PullReport()
    ref_classes: list[str] | None = None
    wanted: list[str] = []
    for csv_path in csvs:
        header = read_header(csv_path)
        classes = find_class_columns(header, source=str(csv_path))
        if ref_classes is None or classes != ref_classes:
            if ref_classes is not None and not different_columns:
                raise PullError(
                    f"{csv_path}: class columns differ from {csvs[0]} "
                    "(use -dc/--different-columns to allow it)"
                )
            ref_classes = classes
            wanted = match_taxa(classes, taxa, strict=strict)
            log("Finding the sub_taxon:")
            for i, c in enumerate(wanted):
                log(f"{i}. {c}")
            report.sub_taxa.extend(c for c in wanted if c not in report.sub_taxa)
            if not wanted and not different_columns:
                raise PullError(f"no class in {csv_path} matches {list(taxa)}")
        log(f"Finding images from {csv_path}")
        try:
            table = read_csv(
                csv_path,
                dtypes={header[0]: str, **dict.fromkeys(classes, float)},
                usecols=[header[0], *classes],
            )
        except ValueError as e:
            raise PullError(f"{csv_path}: unreadable or non-numeric class columns ({e})") from None
        images = table[header[0]]
        probs = np.column_stack([table[c] for c in classes])
        rows = select_images(probs, classes, wanted, threshold=threshold, best=best)
        targets: dict[str, list[str]] = {}  # member id -> class folders
        for cls, idx in rows.items():
            for r in idx:
                targets.setdefault(_image_key(str(images[r])), []).append(cls)
        n_found = len(targets)
        report.found[str(csv_path)] = n_found
        log(f"Found {n_found} images in {csv_path}")
        if n_found == 0:
            continue
        if n_found < min_images:
            log(f"Skipping {csv_path}: {n_found} images < minimum {min_images}")
            report.skipped_min_images.append(str(csv_path))
            continue
        key = chunk_key(csv_path)
        tar = find_tar(tar_dir, key)
        if tar is None:
            msg = f"no tar for {csv_path} in {tar_dir} (looked for {key}.tar / {key}.tar.gz)"
            warnings.warn(msg, stacklevel=2)
            report.missing_tars.append(str(csv_path))
            continue
        log(f"Unzipping {tar} into {out}/")
        got: set[str] = set()
        for rid, member, data in iter_roi_tar_bytes(tar, set(targets)):
            got.add(rid)
            base = member.rsplit("/", 1)[-1]
            for cls in targets[rid]:
                d = out / _safe_dir(cls)
                d.mkdir(exist_ok=True)
                (d / base).write_bytes(data)
                report.written[cls] = report.written.get(cls, 0) + 1
        log(f"Extracted {len(got)} images")
        missing = n_found - len(got)
        if missing:
            msg = f"{missing} of {n_found} selected images of {csv_path} are not in {tar}"
            warnings.warn(msg, stacklevel=2)
            report.missing_images += missing
    log("----- Done -----")
    return report
