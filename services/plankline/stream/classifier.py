"""Classifier service: RoiBatch -> class probabilities -> ClassificationResult.

Two backends, chosen by ``PLANKLINE_INFERENCE``:

- ``onnxruntime`` (default): the job's model in-process, through
  ``pipeline.load_classifier``, i.e. exactly the batch CLI's call;
- ``triton``: the same preprocessing (``model.data.model_inputs``) on this side, the
  network on Triton over gRPC (``PLANKLINE_TRITON_URL``/``_MODEL``), the chunk's
  ROIs split into ``triton_batch``-sized requests of which ``triton_concurrency``
  are in flight at once so Triton's dynamic batcher can fill its batches.
  Triton serves ONE model: a job whose model (``--set model=...``) is not the
  one Triton serves (compared by ``model_fingerprint``: ``model.onnx`` +
  ``labels.txt``) is refused, each of its chunks dead-lettered with a
  "model mismatch" error and reported failed by ``plankline results``; run
  such jobs on a classifier with ``PLANKLINE_INFERENCE=onnxruntime``.

Writes the exact probabilities (``probabilities.npy``), from which the collector
writes the chunk's CSV ``image,<class1>,...`` (plus top and thresholded class; the
message's ``classifications_key``): formatting ~250,000 numbers per chunk here too cost
the classifier 8 % of its CPU for a copy nobody read.

Run: ``python -m plankline.stream.runner plankline.stream.classifier:from_env``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from plankline.config import PipelineSettings
from plankline.pipeline import classify_rois, load_classifier
from plankline.stream import contracts
from plankline.stream._service import ServiceBase
from plankline.stream.jobs import (
    array_to_bytes,
    chunk_from_manifest,
    job_settings,
    rois_from_objects,
)
from plankline.stream.runner import Incoming, Outgoing, PermanentError


class TritonModel:
    """A model served by Triton: class names/thresholds from the local model folder,
    probabilities from the server."""

    def __init__(
        self,
        model_dir: Path | None,
        url: str,
        name: str,
        batch: int,
        concurrency: int,
        timeout_s: float,
    ) -> None:
        import tritonclient.grpc as grpcclient

        from plankline.model.card import read_model_card
        from plankline.model.infer import DEFAULT_MODEL_DIR

        folder = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        card = read_model_card(folder)
        self.class_names, self.thresholds = card.class_names, card.thresholds
        self.card = card
        self.name, self.batch, self.timeout_s = name, batch, timeout_s
        self.client = grpcclient.InferenceServerClient(url)
        try:
            self.check_served_model(folder, url)
        except Exception:
            self.client.close()
            raise
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="triton")

    def check_served_model(self, folder: Path, url: str) -> None:
        """Refuse (``PermanentError``) when Triton serves another model than ``folder``.

        The served model's config carries the fingerprint of the model it was
        exported from (``plankline_model_sha256``); a job submitted with
        ``--set model=...`` that Triton does not serve would otherwise be classified
        silently by the served model under the job's class names.
        """
        from plankline.model.infer import MODEL_FINGERPRINT_PARAMETER, model_fingerprint

        wanted = model_fingerprint(folder)
        config = self.client.get_model_config(self.name, as_json=True, client_timeout=30)
        params = config.get("config", {}).get("parameters", {})
        served = params.get(MODEL_FINGERPRINT_PARAMETER, {}).get("string_value")
        if served != wanted:
            raise PermanentError(
                f"model mismatch: the job asks for the model in {folder} (sha256 {wanted[:12]}) "
                f"but Triton at {url} serves {self.name!r} "
                + (
                    f"exported from another model (sha256 {served[:12]})"
                    if served
                    else f"without a {MODEL_FINGERPRINT_PARAMETER} parameter (re-export it)"
                )
                + "; serve that model in Triton, or run the classifier with "
                "PLANKLINE_INFERENCE=onnxruntime, or submit without --set model"
            )

    def _infer(self, crops: list[np.ndarray]) -> np.ndarray:
        import tritonclient.grpc as grpcclient

        x, f, _ = self.card.inputs(crops)
        image = grpcclient.InferInput("image", list(x.shape), "FP32")
        image.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        features = grpcclient.InferInput("features", list(f.shape), "FP32")
        features.set_data_from_numpy(np.ascontiguousarray(f, dtype=np.float32))
        result = self.client.infer(
            self.name,
            [image, features],
            outputs=[grpcclient.InferRequestedOutput("probs")],
            client_timeout=self.timeout_s,
        )
        probs = result.as_numpy("probs")
        if probs is None or probs.shape != (len(crops), len(self.class_names)):
            raise RuntimeError(
                f"Triton model {self.name} answered {None if probs is None else probs.shape}, "
                f"expected ({len(crops)}, {len(self.class_names)})"
            )
        return probs

    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        parts = [crops[i : i + self.batch] for i in range(0, len(crops), self.batch)]
        if not parts:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(list(self.pool.map(self._infer, parts))).astype(np.float32)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


class ClassifierService(ServiceBase):
    """Handler of ``plankline.rois`` (consumer group ``classifier``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._triton: dict[str, TritonModel] = {}

    def model(self, settings: PipelineSettings) -> Any:
        """The job's model behind the configured backend (loaded once per model)."""
        if self.settings.inference == "onnxruntime":
            return load_classifier(settings)
        key = str(settings.model)
        if key not in self._triton:
            s = self.settings
            self._triton[key] = TritonModel(
                settings.model,
                s.triton_url,
                s.triton_model,
                s.triton_batch,
                s.triton_concurrency,
                s.triton_timeout_s,
            )
        return self._triton[key]

    def process(self, message: Incoming, msg: contracts.RoiBatch) -> list[Outgoing]:  # type: ignore[override]
        ref = msg.chunk
        settings = job_settings(self.store, ref.job_id)
        result = contracts.ClassificationResult(
            chunk=ref, n_rois=msg.n_rois, bucket=self.store.bucket
        )
        if settings.classify:
            chunk = chunk_from_manifest(self.store, ref)
            rois = rois_from_objects(
                self.store.get_bytes(msg.roi_archive_key),
                self.store.get_bytes(msg.positions_key),
                masks=False,
            )
            model = self.model(settings)
            probs = classify_rois(model, rois, settings)  # the batch's call (size gate)
            self.store.put_bytes(
                contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, "probabilities.npy"),
                array_to_bytes(probs),
            )
            # the CSV the collector writes from the exact copy once the chunk is done
            result.classifications_key = contracts.result_key(
                ref.job_id, "classification", chunk.name
            )
            result.model_name = str(settings.model or "default")
            result.model_version = self.settings.inference
        return [Outgoing.of(contracts.TOPIC_CLASSIFICATIONS, result)]

    def close(self) -> None:
        for model in self._triton.values():
            model.close()


def from_env() -> ClassifierService:
    """Factory for the shared runner (settings from ``PLANKLINE_*``)."""
    return ClassifierService()
