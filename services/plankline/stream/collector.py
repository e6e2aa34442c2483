"""Collector service: joins a chunk's measurements and classes into the final outputs.

Consumes ``plankline.measurements`` and ``plankline.classifications``. The join
state is S3 itself: when either message arrives, the chunk is finished if both
exact copies (``measurements.npz`` and ``probabilities.npy``) exist; otherwise
the message is simply committed and the other one will finish it. Finishing
calls ``pipeline.write_outputs`` (the batch CLI's writer) into a temporary
folder, uploads the four files under ``jobs/<job>/results/`` with the batch
project's names, and last writes the ``done.json`` marker. A restart or a
duplicate message redoes the same writes to the same keys; a chunk already
marked done is skipped.

Run: ``python -m plankline.stream.runner plankline.stream.collector:from_env``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from plankline.pipeline import OUTPUT_KINDS, class_columns, write_outputs
from plankline.stream import contracts
from plankline.stream._service import ServiceBase
from plankline.stream.jobs import (
    array_from_bytes,
    chunk_from_manifest,
    encoded_images,
    job_settings,
    table_from_bytes,
)
from plankline.stream.runner import Incoming, Outgoing


class Collector(ServiceBase):
    """Handler of ``plankline.measurements`` + ``plankline.classifications``."""

    def process(self, message: Incoming, msg: Any) -> list[Outgoing]:
        ref = msg.chunk
        began = time.perf_counter()

        def key(artifact: str) -> str:
            return contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, artifact)

        if self.store.exists(key("done.json")):
            return []
        settings = job_settings(self.store, ref.job_id)
        if not self.store.exists(key("measurements.npz")):
            return []
        probs = None
        if settings.classify:
            if not self.store.exists(key("probabilities.npy")):
                return []
            probs = array_from_bytes(self.store.get_bytes(key("probabilities.npy")))
        chunk = chunk_from_manifest(self.store, ref)
        table = table_from_bytes(self.store.get_bytes(key("measurements.npz")))
        ids = [str(i) for i in table["image"]]
        images = encoded_images(self.store.get_bytes(key("rois.tar")), ids)
        counts: dict[str, int] = {}
        class_names = thresholds = None
        if probs is not None:  # names and thresholds of the job's model, from its card
            from plankline.model.card import read_model_card
            from plankline.model.infer import DEFAULT_MODEL_DIR

            card = read_model_card(settings.model or DEFAULT_MODEL_DIR)
            class_names, thresholds = class_columns(card, settings)  # + the size gate's
            labels, tally = np.unique(probs.argmax(axis=1), return_counts=True)
            counts = {class_names[k]: int(c) for k, c in zip(labels, tally, strict=True)}
        with self.scratch() as tmp:
            paths = {
                kind: Path(tmp) / kind / (chunk.name + contracts.RESULT_KINDS[kind][1])
                for kind in OUTPUT_KINDS
            }
            write_outputs(paths, chunk, images, table, settings, probs, class_names, thresholds)
            for kind, path in paths.items():
                if path.exists():
                    self.store.put_file(contracts.result_key(ref.job_id, kind, chunk.name), path)
        record = asdict(chunk) | {
            "rois": len(ids),
            "counts": counts,
            "seconds": time.perf_counter() - began,
            "finished_unix": time.time(),
        }
        self.store.put_bytes(key("done.json"), json.dumps(record).encode())
        return []


def from_env() -> Collector:
    """Factory for the shared runner (settings from ``PLANKLINE_*``)."""
    return Collector()
