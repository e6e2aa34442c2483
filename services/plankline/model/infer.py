"""Classifying ROIs with an exported model (ONNX Runtime) and the classification CSV.

A model folder (``plankline export`` output, or the shipped
``plankline/models/<name>``) holds ``model.onnx``, ``labels.txt``,
``meta.json`` (canvas, inputs, training figures) and optionally
``thresholds.json`` (per-class probability thresholds for a target precision,
written by ``plankline evaluate``).

The classification table, one per chunk (seed layout
``classification/<chunk>.csv``)::

    image,<class1>,...,<classN>,top_class,top_probability,thresholded_class

``thresholded_class`` is ``top_class`` where ``top_probability`` reaches the
class's threshold and ``unclassified`` otherwise (the "cleaner product").

Size gate (:func:`predict_gated`): a ROI whose object is smaller than the smallest
objects a model was trained on lies outside what it has seen, yet a network still
names it. The pipeline therefore sends only ROIs whose longer bbox side reaches the
model's own gate (``meta.json`` ``min_object_px``, set at training; or the setting
``classify_min_px``) through the model; the others get the extra class
``below_model_size`` (probability 1, its own column after the model's classes):
counted, measured and archived like every ROI, never given a taxon they cannot
carry. On real ISIIS frames a fifth of the ROIs are such specks, and each network pass costs
the same whatever the ROI's size, so the gate also saves their cost.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plankline.model.card import ModelCard, read_model_card
from plankline.model.data import POLARITIES, feature_names
from plankline.outputs.tables import read_csv, read_header, write_csv

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

DEFAULT_MODEL_DIR = MODELS_DIR / "ndsb-isiis"
"""The shipped default model, used when no model folder is given: 121 ISIIS classes of the
2015 National Data Science Bowl (PlanktonSet 1.0), trained by ``scripts/train_default_model.py``
(figures in its ``meta.json`` and ``EVALUATION.md``)."""

SYNTHETIC_MODEL_DIR = MODELS_DIR / "synthetic"
"""The shipped model of the synthetic generator's five classes: ``plankline demo`` scores
its classes against the generator's truth, so it needs the generator's names."""

UNCLASSIFIED = "unclassified"
"""``thresholded_class`` of ROIs whose top probability is below their class's threshold."""

TAIL_COLUMNS = ("top_class", "top_probability", "thresholded_class")

MISMATCH_SHARE = 0.25
"""Share of a call's ROIs that must look like the other polarity for the polarity warning:
another imager's library disagrees almost entirely; in ``plankline run`` (frames already
turned bright-field by the flat-field) 1 of 133 ROIs of a 64-line strip did, a crop cut at
the strip's edge, and warned on a run that was right."""

BELOW_MODEL_SIZE = "below_model_size"
"""Class of ROIs under the size gate (see the module docstring): not shown to the model."""


MODEL_FINGERPRINT_PARAMETER = "plankline_model_sha256"
"""Triton config parameter holding :func:`model_fingerprint` of the exported model."""


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over the files that decide a model's answers: ``model.onnx`` and ``labels.txt``.

    Two folders with the same fingerprint give the same probabilities under the same
    names; the classifier service compares it with the one Triton's model config
    carries, so a job is never classified by another model than the one it asked for.
    """
    import hashlib

    folder = Path(model_dir)
    digest = hashlib.sha256()
    for name in ("model.onnx", "labels.txt"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {name} (not an exported model folder)")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


CPU_RUN_BATCH = 32
"""ROIs per ONNX Runtime call on a CPU (a GPU gets the whole prepared batch). The default
model's first-layer activations for 32 ROIs (6 channels of 32 x 32 floats per member: 0.8 MB)
stay in a core's 2 MB L2 cache; for the 256 ROIs prepared at once (6 MB) they do not. Paired
runs on the shared 2-core machine (2,048 NDSB ROIs, one thread, process CPU time, six
alternations): 0.795 ms/ROI in calls of 32, 0.904 in one call of 256 (1.14x); 16 is as fast as
32, 64 in between. Same probabilities (each ROI is computed alone either way)."""


def default_providers() -> list[str]:
    """CUDA when ONNX Runtime has it, else CPU."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


class Classifier:
    """An exported model loaded in ONNX Runtime; :meth:`predict` takes raw ROIs.

    Attributes
    ----------
    class_names : list of str
    canvas : int
    shapes : bool
        Whether the model takes the organism's measurements beside the image.
    colour : bool
        Whether it also takes the organism's colour (``meta.json`` ``colour``).
    fill : int
        Crops smaller than this are enlarged to it (``meta.json`` ``fill``).
    thresholds : dict of str to float, or None
        Per-class probability thresholds (None for a class whose target
        precision was unreachable, i.e. never assigned); None without a
        ``thresholds.json``.
    meta : dict
        Contents of ``meta.json``.
    polarity : str
        The imager convention the model was trained on (``meta.json``
        ``polarity``; ``bright`` for models from before it was recorded). Every
        ROI is normalised with it.
    run_batch : int
        ROIs per ONNX Runtime call (:data:`CPU_RUN_BATCH` on a CPU; 0: the whole
        prepared batch in one call, on a GPU).
    polarity_checked, polarity_mismatched : int
        ROIs predicted so far, and those among them that look like the other
        polarity (the first call where they are at least :data:`MISMATCH_SHARE` of
        its ROIs raises one ``UserWarning``).
    """

    def __init__(self, session: object, card: ModelCard) -> None:
        self.session = session
        self.card = card
        self.class_names = card.class_names
        self.canvas = card.canvas
        self.shapes = card.shapes
        self.colour = card.colour
        self.fill = card.fill
        self.thresholds = card.thresholds
        self.meta = card.meta
        self.polarity = card.polarity
        if self.polarity not in POLARITIES:
            raise ValueError(
                f"meta.json polarity must be one of {POLARITIES}, got {self.polarity!r}"
            )
        self.polarity_checked = 0
        self.polarity_mismatched = 0
        self._polarity_warned = False
        providers = getattr(session, "get_providers", lambda: [])()
        on_cpu = bool(providers) and providers[0] == "CPUExecutionProvider"
        self.run_batch = CPU_RUN_BATCH if on_cpu else 0

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> Classifier:
        """Load a model folder (None = the shipped default model).

        Parameters
        ----------
        model_dir : Path, optional
        providers : sequence of str, optional
            ONNX Runtime execution providers; default CUDA if present, else CPU.
        threads : int, optional
            Intra-op threads (default: ONNX Runtime's choice, all cores).
        """
        import onnxruntime as ort

        card = read_model_card(model_dir if model_dir is not None else DEFAULT_MODEL_DIR)
        onnx_path, labels_path, names = card.onnx_path, card.labels_path, card.class_names
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        sess = ort.InferenceSession(
            str(onnx_path), so, providers=list(providers or default_providers())
        )
        inputs = {i.name: i.shape for i in sess.get_inputs()}
        want = len(feature_names(card.shapes, card.colour))
        if "features" not in inputs or inputs["features"][1] != want:
            raise ValueError(
                f"{onnx_path} takes inputs {inputs}, not image + features (batch, {want}) as "
                f"its meta.json says: exported by an older plankline? re-export it"
            )
        n_out = sess.get_outputs()[0].shape[1]
        if isinstance(n_out, int) and n_out != len(names):
            raise ValueError(
                f"{onnx_path} has {n_out} outputs but {labels_path} names {len(names)}"
            )
        return cls(sess, card)

    def predict(self, crops: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` float32 for raw ROIs (any size, gray/colour).

        Raises ``ValueError`` naming the index of an empty or malformed crop;
        callers that want to skip those (``plankline classify``) filter first.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(crops), len(self.class_names)), np.float32)
        mismatched = 0
        for i in range(0, len(crops), batch_size):
            batch = crops[i : i + batch_size]
            try:
                x, f, disagree = self.card.inputs(batch)
            except ValueError as e:
                bad = next(j for j, c in enumerate(batch) if not _usable(c))
                raise ValueError(f"ROI {i + bad}: {e}") from e
            mismatched += int(disagree.sum())
            self.run(x, f, out=out[i : i + len(batch)])
        self._count_polarity(len(crops), mismatched)
        return out

    def run(
        self, image: np.ndarray, features: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The network alone on prepared inputs (:func:`model_inputs`), in calls of
        :attr:`run_batch` ROIs; probabilities written to ``out`` when given."""
        n = len(image)
        if out is None:
            out = np.empty((n, len(self.class_names)), np.float32)
        step = self.run_batch or max(n, 1)
        for j in range(0, n, step):
            feed = {"image": image[j : j + step], "features": features[j : j + step]}
            out[j : j + len(feed["image"])] = self.session.run(None, feed)[0]  # type: ignore[attr-defined]
        return out

    def _count_polarity(self, n: int, mismatched: int) -> None:
        """Add to the polarity counters; warn once, at the first call where at least
        :data:`MISMATCH_SHARE` of the ROIs disagree with the model's polarity."""
        self.polarity_checked += n
        self.polarity_mismatched += mismatched
        message = None if self._polarity_warned else polarity_warning(mismatched, n, self.polarity)
        if message:
            self._polarity_warned = True
            warnings.warn(message + " (further mismatches are counted, not warned)", stacklevel=3)

    def thresholded(self, probs: np.ndarray) -> list[str]:
        """``thresholded_class`` per row of ``probs`` (see module docstring)."""
        return thresholded_classes(probs, self.class_names, self.thresholds)


def polarity_warning(mismatched: int, n: int, polarity: str) -> str | None:
    """The warning that ``mismatched`` of ``n`` ROIs look like the other polarity than a
    model trained on ``polarity`` images, or None under :data:`MISMATCH_SHARE` of them
    (the classifier's first such call, the commands' totals)."""
    if not mismatched or mismatched < MISMATCH_SHARE * n:
        return None
    field_ = {
        "bright": "bright-field (dark organisms on a bright background)",
        "dark": "dark-field (bright organisms on a dark background)",
    }
    other = "dark" if polarity == "bright" else "bright"
    return (
        f"{mismatched} of {n} ROIs look {field_[other]}, but the model was trained on "
        f"{field_[polarity]} images: their classes are unreliable; train a model on this "
        "imager's ROIs"
    )


def gated_classes(
    class_names: Sequence[str], thresholds: Mapping[str, float | None] | None, min_px: int
) -> tuple[list[str], dict[str, float | None] | None]:
    """Class names and thresholds of :func:`predict_gated`'s output for this gate.

    With a gate (``min_px > 0``) ``below_model_size`` follows the model's classes, with
    threshold 0 (a gated ROI's ``thresholded_class`` says why it has no taxon); without
    one, the model's own. The columns depend on the setting only, never on the ROIs, so
    every chunk of a run has the same table.
    """
    names = list(class_names)
    if min_px <= 0:
        return names, None if thresholds is None else dict(thresholds)
    if BELOW_MODEL_SIZE in names:
        raise ValueError(f"the model has a class named {BELOW_MODEL_SIZE!r}, the size gate's")
    gated = None if thresholds is None else {**thresholds, BELOW_MODEL_SIZE: 0.0}
    return [*names, BELOW_MODEL_SIZE], gated


def predict_gated(
    model: Any,
    crops: Sequence[np.ndarray],
    heights: np.ndarray,
    widths: np.ndarray,
    min_px: int,
) -> np.ndarray:
    """Class probabilities of ROIs, the network run only on those the size gate passes.

    Parameters
    ----------
    model
        Anything with ``predict(crops) -> (n, n_classes)`` and ``class_names``: a
        :class:`Classifier`, or the stream's Triton client.
    crops : sequence of arrays
    heights, widths : int arrays
        The objects' bounding boxes (not the padded crops).
    min_px : int
        ROIs whose longer bbox side is under this are ``below_model_size``; 0 = no gate.

    Returns
    -------
    (n, n_classes [+ 1]) float32
        The columns of :func:`gated_classes`; a gated row is 1 in the last column.
    """
    if min_px <= 0:
        return model.predict(crops)
    n = len(crops)
    if len(heights) != n or len(widths) != n:
        raise ValueError(f"{n} crops but {len(heights)} heights and {len(widths)} widths")
    passed = np.flatnonzero(np.maximum(heights, widths) >= min_px)
    probs = np.zeros((n, len(model.class_names) + 1), np.float32)
    probs[:, -1] = 1.0
    if len(passed):
        probs[passed, :-1] = model.predict([crops[i] for i in passed.tolist()])
        probs[passed, -1] = 0.0
    return probs


def _usable(crop: np.ndarray) -> bool:
    a = np.asarray(crop)
    return a.size > 0 and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4)))


def thresholded_classes(
    probs: np.ndarray,
    class_names: Sequence[str],
    thresholds: Mapping[str, float | None] | Sequence[float | None] | None,
) -> list[str]:
    """Top class where its probability reaches that class's threshold, else ``unclassified``.

    Without thresholds every ROI keeps its top class.
    """
    top = probs.argmax(1) if len(probs) else np.zeros(0, int)
    ptop = probs.max(1) if len(probs) else np.zeros(0)
    if thresholds is None:
        return [class_names[k] for k in top]
    if isinstance(thresholds, Mapping):
        t = [thresholds.get(n) for n in class_names]
    else:
        t = list(thresholds)
    thr = np.array([np.inf if v is None else float(v) for v in t])
    return [class_names[k] if p >= thr[k] else UNCLASSIFIED for k, p in zip(top, ptop, strict=True)]


@functools.cache
def shared_classifier(
    model_dir: Path | None = None, *, cpu: bool = False, threads: int | None = None
) -> Classifier:
    """The model loaded once per process for these settings: worker processes (batch run,
    classify, stream services) call this for every chunk."""
    providers = ["CPUExecutionProvider"] if cpu else None
    return Classifier.load(model_dir, providers=providers, threads=threads)


def write_classification_csv(
    path: Path,
    image_ids: Sequence[str],
    probs: np.ndarray,
    class_names: Sequence[str],
    thresholds: Mapping[str, float | None] | Sequence[float | None] | None = None,
) -> Path:
    """Write the classification table atomically (:func:`plankline.outputs.tables.write_csv`).

    A reader never sees a half-written table, and a retried chunk overwrites.
    Probabilities are written with six decimals (``%.6f``).

    Parameters
    ----------
    path : Path
        Destination ``.csv``; parent folders are created.
    image_ids : sequence of str
        ROI ids (file name without extension), one per row of ``probs``.
    probs : ndarray
        ``(n, n_classes)`` probabilities.
    class_names : sequence of str
    thresholds : mapping or sequence, optional
        Per-class thresholds for ``thresholded_class``.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape != (len(image_ids), len(class_names)):
        raise ValueError(
            f"{path}: probs must be (n_images={len(image_ids)}, n_classes={len(class_names)}), "
            f"got {probs.shape}"
        )
    reserved = {"image", *TAIL_COLUMNS} & set(class_names)
    if reserved:
        raise ValueError(f"{path}: class names {sorted(reserved)} collide with CSV columns")
    top = probs.argmax(axis=1)
    columns: dict[str, Any] = {"image": list(image_ids)}
    columns.update((name, probs[:, j]) for j, name in enumerate(class_names))
    columns["top_class"] = [class_names[k] for k in top.tolist()]
    columns["top_probability"] = probs[np.arange(len(probs)), top]
    columns["thresholded_class"] = thresholded_classes(probs, class_names, thresholds)
    write_csv(path, columns, float_format="%.6f")
    return Path(path)


def read_top_classes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each ROI's ``top_class`` and ``thresholded_class`` from a table written by
    :func:`write_classification_csv`.

    Those two text columns instead of every class's: the summary of a classified run
    reads every table once. Tables without them (hand-made) give the class of the
    largest written probability, and ``unclassified`` as the thresholded class (no
    threshold is known).
    """
    wanted = ["top_class", "thresholded_class"]
    if set(wanted) <= set(read_header(path)):
        table = read_csv(path, dtypes=dict.fromkeys(wanted, str), usecols=wanted)
        return table["top_class"], table["thresholded_class"]
    _, probs, names = read_classification_csv(path)
    top = np.asarray(names, dtype=object)[probs.argmax(axis=1)]
    return top, np.full(len(top), UNCLASSIFIED, dtype=object)


def read_classification_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read a table written by :func:`write_classification_csv`.

    Returns
    -------
    image_ids : list of str
    probs : ndarray
        ``(n, n_classes)`` float32.
    class_names : list of str
    """
    header = read_header(path)
    if not header:
        raise ValueError(f"{path}: empty classification table")
    if header[0] != "image":
        raise ValueError(f"{path}: first column must be 'image', got {header[:1]}")
    tail = [c for c in TAIL_COLUMNS if c in header]
    names = header[1 : len(header) - len(tail)]
    # NumPy's C reader (read_csv): the csv module and a float() per value took ~25 us a
    # row of a 121-class table, the summary of every classified run reads them all
    columns = read_csv(
        path, dtypes={"image": str} | dict.fromkeys(names, float), usecols=["image", *names]
    )
    ids = [str(i) for i in columns["image"]]
    probs = np.empty((len(ids), len(names)), np.float32)
    for j, name in enumerate(names):
        probs[:, j] = columns[name]
    return ids, probs, names
