"""The public gRPC gateway: other labs classify, measure, submit and fetch without a shell.

``plankline.v1.Plankline`` (``protos/plankline/v1/api.proto`` is the reference) is a
thin layer over what already exists, so there is one way per thing:

- direct calls use the classifier library in this process
  (``model.infer.shared_classifier``, ``thresholded_classes``) and
  ``imaging.measure.measure_rois``;
- jobs go through the streaming stack exactly as ``plankline submit`` sends them
  (``stream.ingest.submit`` of a video already in the object store: the upload
  lands there first, by content hash, so a cut upload resumes where the store
  stops); status, results and the summary are ``stream.results``' own functions.

Each call is authenticated (``stream.auth``: one bearer token per lab), and what a
lab may ask is bounded (images per request, pixels per image, message and upload
bytes, concurrent streams and unfinished jobs per lab): over a limit answers
RESOURCE_EXHAUSTED before any work is done. The gateway keeps two small records
per job in the store (``gateway/owners/<job>``: the lab; ``gateway/labs/<lab>/jobs/
<job>.json``: created), so it is stateless and may run replicated. CancelJob writes
the job's cancellation marker (``stream.jobs.cancel_job``): every service skips the
job's chunks still in the topics.

Run it with ``python -m plankline.stream.gateway`` (settings: :class:`GatewaySettings`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import re
import signal
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from plankline.stream import contracts
from plankline.stream.auth import TokenTable, bearer
from plankline.stream.jobs import cancel_job, job_cancelled
from plankline.stream.settings import GatewaySettings
from plankline.stream.store import S3Store, StoreAuthError, StoreUnavailableError
from plankline.stream.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger("plankline.gateway")

SERVICE_NAME = api_pb2.DESCRIPTOR.services_by_name["Plankline"].full_name
ANONYMOUS = "anonymous"
DOWNLOAD_PIECE = 1 << 20
#: Largest pixel size Measure takes (1 m per pixel): physical areas stay finite.
MAX_PIXEL_SIZE_UM = 1e6
#: Upload pieces are gathered to this size before each PUT (one object per part).
UPLOAD_PART = 8 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PART = re.compile(r"/parts/(\d{16})-(\d{16})$")
Code = grpc.StatusCode


class _Abort(Exception):
    """A gRPC status to answer with (raised anywhere below a handler)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def rich_status(code: grpc.StatusCode, message: str) -> grpc.Status:
    """A status with ``google.rpc`` error details (``grpcio-status``) naming the field.

    Messages start with the request field at fault (``images[3]: ...``); clients that
    read details get it machine-readable: ``BadRequest`` field violations for
    INVALID_ARGUMENT / FAILED_PRECONDITION, ``QuotaFailure`` for RESOURCE_EXHAUSTED.
    """
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    field, sep, description = message.partition(": ")
    details = []
    if sep and code in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=description
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    elif sep and code == Code.RESOURCE_EXHAUSTED:
        quota = error_details_pb2.QuotaFailure.Violation(subject=field, description=description)
        details.append(error_details_pb2.QuotaFailure(violations=[quota]))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return rpc_status.to_status(status)


# ---------------------------------------------------------------------------- images


def decode_image(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    """Decode one encoded image, gray or BGR, 8 or 16 bit, refusing oversize ones unread.

    The size comes from the header (Pillow reads only that) before OpenCV decodes a
    pixel: a 40 kB PNG can declare 30,000 x 30,000 pixels.
    """
    if not data:
        raise _Abort(Code.INVALID_ARGUMENT, f"{field}: empty (no image bytes)")
    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as header:
                width, height = header.size
    except PILImage.DecompressionBombError:
        raise _Abort(
            Code.RESOURCE_EXHAUSTED,
            f"{field}: declares more pixels than the limit of {max_pixels} per image",
        ) from None
    except Exception:  # any unreadable header is the caller's bad input, not our bug
        raise _Abort(
            Code.INVALID_ARGUMENT,
            f"{field}: not a PNG/JPEG/TIFF/BMP image ({len(data)} bytes, no header recognised)",
        ) from None
    if width * height > max_pixels:
        raise _Abort(
            Code.RESOURCE_EXHAUSTED,
            f"{field}: {width}x{height} pixels is over the limit of {max_pixels} per image",
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise _Abort(Code.INVALID_ARGUMENT, f"{field}: image data is corrupt (cannot decode)")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype not in (np.uint8, np.uint16):
        raise _Abort(Code.INVALID_ARGUMENT, f"{field}: {image.dtype} pixels; 8 or 16 bit only")
    return image


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ServedModel:
    name: str
    folder: Path
    sha256: str
    is_default: bool

    @property
    def classifier(self) -> Any:
        from plankline.model.infer import shared_classifier

        return shared_classifier(self.folder)

    def info(self) -> api_pb2.ModelInfo:
        clf = self.classifier
        return api_pb2.ModelInfo(
            name=self.name,
            sha256=self.sha256,
            version=str(clf.meta.get("format", "")),
            class_names=clf.class_names,
            input_size=int(clf.canvas),
            polarity=clf.polarity,
            uses_measurements=clf.shapes,
            is_default=self.is_default,
        )


def load_models(folders: list[str]) -> dict[str, ServedModel]:
    """The served models by name (folder name); the first is the default."""
    from plankline.model.infer import DEFAULT_MODEL_DIR, model_fingerprint

    paths = [Path(f) for f in folders] or [DEFAULT_MODEL_DIR]
    models = {}
    for i, path in enumerate(paths):
        model = ServedModel(path.name, path, model_fingerprint(path), i == 0)
        if model.name in models:
            raise ValueError(f"gateway_model_dirs: two models named {model.name!r}")
        model.classifier  # noqa: B018 - load (and check) now, not at the first call
        models[model.name] = model
    return models


# ---------------------------------------------------------------------------- handlers


def _unary(method: Callable) -> Callable:
    """Answer a unary handler's :class:`_Abort` (and outages) with their gRPC status."""

    @functools.wraps(method)
    def wrapper(self: Gateway, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as error:
            self._abort_with(error, context, method.__name__)

    return wrapper


def _streaming(method: Callable) -> Callable:
    """As :func:`_unary`, for handlers that yield responses."""

    @functools.wraps(method)
    def wrapper(self: Gateway, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as error:
            self._abort_with(error, context, method.__name__)

    return wrapper


class Gateway(api_pb2_grpc.PlanklineServicer):
    """The servicer (see module). One per server; thread-safe."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        store: S3Store | None = None,
        tokens: TokenTable | None = None,
    ) -> None:
        self.settings = settings
        self.models = load_models(settings.gateway_model_dirs)
        self.default_model = next(iter(self.models.values()))
        self.tokens = tokens or TokenTable.from_settings(
            settings.gateway_tokens.get_secret_value() if settings.gateway_tokens else None,
            settings.gateway_tokens_file,
        )
        self._store = store
        self._streams: Counter[str] = Counter()
        self.upload_part_bytes = UPLOAD_PART
        self._lock = threading.Lock()

    @property
    def store(self) -> S3Store:
        if self._store is None:
            self._store = S3Store.from_settings(self.settings)
        return self._store

    # -------------------------------------------------------------------- plumbing

    def _abort_with(self, error: Exception, context: grpc.ServicerContext, where: str) -> None:
        if isinstance(error, _Abort):
            context.abort_with_status(rich_status(error.code, error.message))
        if isinstance(error, StoreUnavailableError | ConnectionError | TimeoutError):
            context.abort(Code.UNAVAILABLE, f"object store or broker unavailable: {error}")
        if type(error).__module__.startswith("kafka"):
            context.abort(Code.UNAVAILABLE, f"broker unavailable: {type(error).__name__}")
        if isinstance(error, StoreAuthError):
            log.error("%s: the gateway's own S3 credentials were refused: %s", where, error)
            context.abort(Code.INTERNAL, "the gateway cannot reach its object store")
        if context.code() is not None or not context.is_active():
            raise error  # context.abort() already set it, or the client went away
        log.exception("%s failed", where)
        context.abort(Code.INTERNAL, f"{where}: {type(error).__name__}: {error}")

    def lab(self, context: grpc.ServicerContext) -> str:
        """The calling lab, from its bearer token (UNAUTHENTICATED otherwise)."""
        token = bearer(context.invocation_metadata())
        if token is None:
            if self.settings.gateway_allow_unauthenticated:
                return ANONYMOUS
            raise _Abort(
                Code.UNAUTHENTICATED, "authorization: no 'Bearer <token>' in the call metadata"
            )
        lab = self.tokens.lab_of(token)
        if lab is None:
            raise _Abort(Code.UNAUTHENTICATED, "authorization: unknown or revoked token")
        return lab

    @contextmanager
    def stream_slot(self, lab: str) -> Iterator[None]:
        """Hold one of the lab's concurrent streaming calls for the ``with`` body."""
        limit = self.settings.gateway_max_streams_per_lab
        with self._lock:
            if self._streams[lab] >= limit:
                raise _Abort(
                    Code.RESOURCE_EXHAUSTED,
                    f"lab {lab!r} already has {limit} streaming calls open (the limit)",
                )
            self._streams[lab] += 1
        try:
            yield
        finally:
            with self._lock:
                self._streams[lab] -= 1

    def _images(self, images: Any, field: str = "images") -> list[np.ndarray]:
        n, limit = len(images), self.settings.gateway_max_images
        if n == 0:
            raise _Abort(Code.INVALID_ARGUMENT, f"{field}: no images in the request")
        if n > limit:
            raise _Abort(Code.RESOURCE_EXHAUSTED, f"{field}: {n} images, over the limit of {limit}")
        pixels = self.settings.gateway_max_image_pixels
        return [decode_image(im.data, f"{field}[{i}]", pixels) for i, im in enumerate(images)]

    def _model(self, name: str) -> ServedModel:
        if not name:
            return self.default_model
        if name not in self.models:
            raise _Abort(
                Code.NOT_FOUND, f"model: no model {name!r}; served: {', '.join(self.models)}"
            )
        return self.models[name]

    @staticmethod
    def _deadline(context: grpc.ServicerContext, what: str) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Abort(Code.DEADLINE_EXCEEDED, f"deadline passed before {what}")

    # -------------------------------------------------------------------- direct calls

    def _classify(self, request: api_pb2.ClassifyRequest, context: Any) -> Any:
        from plankline.model.infer import thresholded_classes

        model = self._model(request.model)
        crops = self._images(request.images)
        self._deadline(context, "classifying")
        clf = model.classifier
        try:
            probs = clf.predict(crops)
        except ValueError as error:  # "ROI 3: ..." from the library
            match = re.match(r"ROI (\d+): (.*)", str(error), re.S)
            where = f"images[{match.group(1)}]" if match else "images"
            raise _Abort(
                Code.INVALID_ARGUMENT, f"{where}: {match.group(2) if match else error}"
            ) from None
        thresholded = thresholded_classes(probs, clf.class_names, clf.thresholds)
        top = probs.argmax(1)
        return api_pb2.ClassifyResponse(
            class_names=clf.class_names,
            model=model.name,
            model_sha256=model.sha256,
            predictions=[
                api_pb2.Prediction(
                    id=im.id,
                    probabilities=p.tolist(),
                    top_class=clf.class_names[k],
                    top_probability=float(p[k]),
                    thresholded_class=t,
                )
                for im, p, k, t in zip(request.images, probs, top, thresholded, strict=True)
            ],
        )

    @_unary
    def Classify(self, request: api_pb2.ClassifyRequest, context: Any) -> Any:
        self.lab(context)
        return self._classify(request, context)

    @_streaming
    def ClassifyStream(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        lab = self.lab(context)
        with self.stream_slot(lab):
            for request in requests:
                yield self._classify(request, context)

    @_unary
    def Measure(self, request: api_pb2.MeasureRequest, context: Any) -> Any:
        from plankline.imaging.measure import measure_rois
        from plankline.imaging.segment import object_mask

        self.lab(context)
        if not 0 <= request.pixel_size_um <= MAX_PIXEL_SIZE_UM:  # NaN fails too
            raise _Abort(
                Code.INVALID_ARGUMENT,
                f"pixel_size_um: must be a number in [0, {MAX_PIXEL_SIZE_UM:g}], "
                f"got {request.pixel_size_um}",
            )
        crops = self._images(request.images)
        masks = []
        for i, (image, crop) in enumerate(zip(request.images, crops, strict=True)):
            if image.mask:
                field = f"images[{i}].mask"
                mask = decode_image(image.mask, field, self.settings.gateway_max_image_pixels)
                if mask.shape[:2] != crop.shape[:2]:
                    raise _Abort(
                        Code.INVALID_ARGUMENT,
                        f"{field}: {mask.shape[1]}x{mask.shape[0]} pixels but the image is "
                        f"{crop.shape[1]}x{crop.shape[0]}",
                    )
                masks.append(mask.reshape(mask.shape[0], mask.shape[1], -1).any(axis=2))
            else:
                masks.append(object_mask(crop))
        self._deadline(context, "measuring")
        table = measure_rois(crops, masks, pixel_size_um=request.pixel_size_um or None)
        return api_pb2.MeasureResponse(
            ids=[im.id for im in request.images],
            columns=[
                api_pb2.Column(name=name, values=np.asarray(values, np.float64).tolist())
                for name, values in table.items()
            ],
        )

    @_unary
    def ListModels(self, request: Any, context: Any) -> Any:
        self.lab(context)
        return api_pb2.ListModelsResponse(models=[m.info() for m in self.models.values()])

    # -------------------------------------------------------------------- job records

    @staticmethod
    def _job_id(job_id: str, field: str = "job_id") -> str:
        try:
            contracts.job_prefix(job_id)
        except ValueError as error:
            raise _Abort(Code.INVALID_ARGUMENT, f"{field}: {error}") from None
        return job_id

    @staticmethod
    def _record_key(lab: str, job: str) -> str:
        return f"gateway/labs/{lab}/jobs/{job}.json"

    def _owner(self, job: str) -> str | None:
        try:
            return self.store.get_bytes(f"gateway/owners/{job}").decode()
        except KeyError:
            return None

    def _own(self, lab: str, job_id: str) -> dict[str, Any]:
        """The lab's record of ``job_id``; NOT_FOUND / PERMISSION_DENIED otherwise."""
        job = self._job_id(job_id)
        owner = self._owner(job)
        if owner is None:
            raise _Abort(Code.NOT_FOUND, f"job_id: no job {job!r}")
        if owner != lab:
            raise _Abort(Code.PERMISSION_DENIED, f"job_id: job {job!r} belongs to another lab")
        try:
            return json.loads(self.store.get_bytes(self._record_key(lab, job)))
        except KeyError:
            raise _Abort(Code.NOT_FOUND, f"job_id: no job {job!r}") from None

    def _claim(self, lab: str, job_id: str) -> dict[str, Any]:
        """The lab's record of ``job_id``, created (within the lab's job limit) if new."""
        job = self._job_id(job_id)
        owner = self._owner(job)
        if owner is not None:
            record = self._own(lab, job)
            if job_cancelled(self.store, job):
                raise _Abort(Code.FAILED_PRECONDITION, f"job_id: job {job!r} was cancelled")
            return record
        if self.store.exists(contracts.manifest_key(job)):  # submitted without the gateway
            raise _Abort(Code.PERMISSION_DENIED, f"job_id: job {job!r} belongs to another lab")
        limit = self.settings.gateway_max_jobs_per_lab
        running = [j for j in self._lab_jobs(lab) if j.state == api_pb2.Job.RUNNING]
        if len(running) >= limit:
            raise _Abort(
                Code.RESOURCE_EXHAUSTED,
                f"job_id: lab {lab!r} has {len(running)} unfinished jobs (the limit is {limit})",
            )
        record = {"job": job, "lab": lab, "created_unix_ms": int(time.time() * 1000)}
        self.store.put_bytes(self._record_key(lab, job), json.dumps(record).encode())
        self.store.put_bytes(f"gateway/owners/{job}", lab.encode())
        return record

    def _job(self, record: dict[str, Any]) -> api_pb2.Job:
        from plankline.stream.results import job_status

        job = api_pb2.Job(
            job_id=record["job"], lab=record["lab"], created_unix_ms=record["created_unix_ms"]
        )
        try:
            status = job_status(self.store, record["job"])
        except KeyError:  # claimed, manifest not written yet
            cancelled = job_cancelled(self.store, record["job"])
            job.state = api_pb2.Job.CANCELLED if cancelled else api_pb2.Job.RUNNING
            return job
        job.chunks_planned, job.chunks_done = status.planned, status.done
        job.chunks_failed, job.chunks_pending = len(status.failed), max(status.pending, 0)
        job.rois = status.rois
        job.failures.extend(
            api_pb2.ChunkFailure(chunk=name, error=error) for name, error in status.failed.items()
        )
        if status.cancelled:
            job.state = api_pb2.Job.CANCELLED
        elif not status.finished:
            job.state = api_pb2.Job.RUNNING
        else:
            job.state = api_pb2.Job.FAILED if status.failed else api_pb2.Job.SUCCEEDED
        return job

    def _lab_jobs(self, lab: str) -> list[api_pb2.Job]:
        jobs = []
        for key in self.store.list(f"gateway/labs/{lab}/jobs/"):
            jobs.append(self._job(json.loads(self.store.get_bytes(key))))
        return jobs

    # -------------------------------------------------------------------- submitting

    def _settings(self, values: Any, field: str = "settings") -> Any:
        """A lab's ``PipelineSettings``; ``model`` names a served model (ListModels), and no
        other setting may name a path: a lab never points the services at server files."""
        from pydantic import ValidationError

        from plankline.config import PipelineSettings

        values = dict(values)
        for name, info in PipelineSettings.model_fields.items():
            if name in values and name != "model" and "Path" in str(info.annotation):
                raise _Abort(
                    Code.INVALID_ARGUMENT, f"{field}[{name!r}]: a server path, not settable"
                )
        if "model" in values:
            if values["model"] not in self.models:
                raise _Abort(
                    Code.INVALID_ARGUMENT,
                    f"{field}['model']: {values['model'][:80]!r} is not a served model "
                    f"({', '.join(self.models)})",
                )
            values["model"] = str(self.models[values["model"]].folder)
        try:
            return PipelineSettings(**values)
        except ValidationError as error:
            first = error.errors()[0]
            name = ".".join(str(x) for x in first["loc"])
            raise _Abort(Code.INVALID_ARGUMENT, f"{field}[{name!r}]: {first['msg']}") from None
        except (TypeError, ValueError) as error:
            raise _Abort(Code.INVALID_ARGUMENT, f"{field}: {error}") from None

    def _submit(self, lab: str, job: str, key: str, settings: Any) -> api_pb2.Job:
        from plankline.stream.ingest import submit

        record = self._claim(lab, job)
        try:
            report = submit(
                [f"s3://{self.store.bucket}/{key}"],
                job,
                settings,
                self.store,
                self.settings.bootstrap_servers,
            )
        except ValueError as error:  # other settings than the job's first submit
            raise _Abort(Code.FAILED_PRECONDITION, f"settings: {error}") from None
        if report.failures:
            if not self.store.exists(contracts.manifest_key(job)):  # a new job got no video:
                self.store.delete(self._record_key(lab, job))  # free its id and the lab's
                self.store.delete(f"gateway/owners/{job}")  # job slot again
            raise _Abort(Code.INVALID_ARGUMENT, f"video: {report.failures[0]}")
        return self._job(record)

    @_unary
    def SubmitReference(self, request: Any, context: Any) -> Any:
        lab = self.lab(context)
        self._job_id(request.job_id)
        if not request.key or request.key.endswith("/") or ".." in request.key.split("/"):
            raise _Abort(Code.INVALID_ARGUMENT, f"key: not an object key: {request.key!r}")
        if request.key.startswith(("jobs/", "gateway/")) and not request.key.startswith(
            "gateway/uploads/"
        ):
            raise _Abort(Code.PERMISSION_DENIED, f"key: {request.key!r} is not a video object")
        if not self.store.exists(request.key):
            raise _Abort(Code.NOT_FOUND, f"key: no object {request.key!r} in the store")
        return self._submit(lab, request.job_id, request.key, self._settings(request.settings))

    def _upload_prefix(self, sha256: str, field: str = "sha256") -> str:
        if not _SHA256.match(sha256):
            raise _Abort(
                Code.INVALID_ARGUMENT, f"{field}: 64 lowercase hex digits, got {sha256[:80]!r}"
            )
        return f"gateway/uploads/{sha256}/"

    def _stored(self, prefix: str) -> tuple[int, list[tuple[int, int, str]]]:
        """Bytes stored contiguously from 0 under ``prefix``, and the parts."""
        parts = []
        for key in self.store.list(prefix + "parts/"):
            match = _PART.search(key)
            if match:
                parts.append((int(match.group(1)), int(match.group(2)), key))
        parts.sort()
        end = 0
        for start, length, _ in parts:
            if start > end:
                break
            end = max(end, start + length)
        return end, parts

    @_unary
    def GetUpload(self, request: Any, context: Any) -> Any:
        self.lab(context)
        prefix = self._upload_prefix(request.sha256)
        name = self._video_name(request.video_name) if request.video_name else ""
        if name and self.store.exists(prefix + name):
            return api_pb2.Upload(sha256=request.sha256, complete=True)
        stored, _ = self._stored(prefix)
        return api_pb2.Upload(sha256=request.sha256, bytes_stored=stored)

    @staticmethod
    def _video_name(name: str, field: str = "video_name") -> str:
        if not _NAME.match(name) or name == "parts":
            raise _Abort(
                Code.INVALID_ARGUMENT,
                f"{field}: a file name of [A-Za-z0-9._-] (no folders), got {name[:80]!r}",
            )
        return name

    @_unary
    def SubmitVideo(self, requests: Iterator[Any], context: Any) -> Any:
        lab = self.lab(context)
        with self.stream_slot(lab):
            first = next(requests, None)
            if first is None or first.WhichOneof("part") != "header":
                raise _Abort(Code.INVALID_ARGUMENT, "header: the first message must be a header")
            head = first.header
            self._job_id(head.job_id, "header.job_id")
            name = self._video_name(head.video_name, "header.video_name")
            prefix = self._upload_prefix(head.sha256, "header.sha256")
            settings = self._settings(head.settings, "header.settings")
            if head.size == 0:
                raise _Abort(Code.INVALID_ARGUMENT, "header.size: 0 bytes (an empty video)")
            if head.size > self.settings.gateway_max_upload_bytes:
                raise _Abort(
                    Code.RESOURCE_EXHAUSTED,
                    f"header.size: {head.size} bytes, over the upload limit of "
                    f"{self.settings.gateway_max_upload_bytes}",
                )
            whole = prefix + name
            uploaded = 0
            if not self.store.exists(whole):
                uploaded = self._receive(requests, head, prefix, context)
                self._assemble(prefix, whole, head)
            job = self._submit(lab, head.job_id, whole, settings)
            job.uploaded_bytes = uploaded
            return job

    def _receive(self, requests: Iterator[Any], head: Any, prefix: str, context: Any) -> int:
        """Store the stream's data as parts from ``head.offset``; returns the bytes stored.

        Each part is PUT once ``UPLOAD_PART`` bytes have arrived, and what arrived
        before a cut stream is PUT too, so a resumed upload sends only the rest.
        """
        stored, _ = self._stored(prefix)
        if head.offset != stored:
            raise _Abort(
                Code.FAILED_PRECONDITION,
                f"header.offset: {head.offset}, but the store holds {stored} bytes of this "
                "sha256 (resume at GetUpload.bytes_stored)",
            )
        offset, buffer, received = head.offset, bytearray(), 0

        def flush() -> None:
            nonlocal offset
            if buffer:
                key = f"{prefix}parts/{offset:016d}-{len(buffer):016d}"
                self.store.put_bytes(key, bytes(buffer))
                offset += len(buffer)
                buffer.clear()

        try:
            for i, message in enumerate(requests, start=1):
                if message.WhichOneof("part") != "data":
                    raise _Abort(
                        Code.INVALID_ARGUMENT, f"messages[{i}]: only data after the header"
                    )
                received += len(message.data)
                if offset + len(buffer) + len(message.data) > head.size:
                    raise _Abort(
                        Code.INVALID_ARGUMENT,
                        f"messages[{i}].data: more bytes than header.size ({head.size})",
                    )
                buffer += message.data
                if len(buffer) >= self.upload_part_bytes:
                    flush()
        finally:
            if context.is_active() or buffer:  # keep what arrived, even from a cut stream
                flush()
        if offset != head.size:
            raise _Abort(
                Code.FAILED_PRECONDITION,
                f"header.size: {head.size} bytes announced, {offset} stored; resume the "
                "upload at GetUpload.bytes_stored",
            )
        return received

    def _assemble(self, prefix: str, whole: str, head: Any) -> None:
        """Join the parts into the video object if their sha256 is the header's."""
        stored, parts = self._stored(prefix)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(suffix=".video") as tmp:
            end = 0
            for start, length, key in parts:
                data = self.store.get_bytes(key)
                if start + length <= end:
                    continue
                data = data[end - start :]
                digest.update(data)
                tmp.write(data)
                end += len(data)
            tmp.flush()
            if stored != head.size or digest.hexdigest() != head.sha256:
                for _, _, key in parts:
                    self.store.delete(key)
                raise _Abort(
                    Code.FAILED_PRECONDITION,
                    f"header.sha256: the {stored} bytes received hash to {digest.hexdigest()}, "
                    f"not {head.sha256}; the parts were dropped, upload again from 0",
                )
            self.store.put_file(whole, tmp.name)
        for _, _, key in parts:
            self.store.delete(key)

    # -------------------------------------------------------------------- job calls

    @_unary
    def GetJob(self, request: Any, context: Any) -> Any:
        return self._job(self._own(self.lab(context), request.job_id))

    @_streaming
    def WatchJob(self, request: Any, context: Any) -> Iterator[Any]:
        lab = self.lab(context)
        record = self._own(lab, request.job_id)
        with self.stream_slot(lab):
            last = None
            while context.is_active():
                record = self._own(lab, request.job_id)  # sees a cancel from another call
                job = self._job(record)
                if job != last:
                    yield api_pb2.JobEvent(job=job, at_unix_ms=int(time.time() * 1000))
                    last = job
                if job.state != api_pb2.Job.RUNNING:
                    return
                pause = self.settings.gateway_watch_interval_s
                remaining = context.time_remaining()
                if remaining is not None:
                    pause = min(pause, max(remaining, 0.0))
                time.sleep(pause)

    @_unary
    def ListJobs(self, request: Any, context: Any) -> Any:
        return api_pb2.ListJobsResponse(jobs=self._lab_jobs(self.lab(context)))

    @_unary
    def CancelJob(self, request: Any, context: Any) -> Any:
        lab = self.lab(context)
        record = self._own(lab, request.job_id)
        cancel_job(self.store, record["job"], by=lab, reason="CancelJob")
        return self._job(record)

    # -------------------------------------------------------------------- results

    def _result_files(self, job: str) -> dict[str, int]:
        from plankline import pipeline

        prefix = contracts.job_prefix(job) + "results/"
        files = {key[len(prefix) :]: self.store.size(key) for key in self.store.list(prefix)}
        return files | {f"summary/{name}": 0 for name in pipeline.SUMMARY_FILES}

    @_unary
    def ListResults(self, request: Any, context: Any) -> Any:
        record = self._own(self.lab(context), request.job_id)
        files = self._result_files(record["job"])
        return api_pb2.ListResultsResponse(
            files=[api_pb2.ResultFile(path=p, size=s) for p, s in sorted(files.items())]
        )

    @_streaming
    def DownloadResults(self, request: Any, context: Any) -> Iterator[Any]:
        """Each file goes straight from the store in ``DOWNLOAD_PIECE`` ranged reads, so
        memory and disk stay bounded by one piece whatever the job's size; ``summary/`` is
        made from the done chunks' classification CSVs only (``results.summary_files``)."""
        from plankline.stream.results import summary_files

        lab = self.lab(context)
        job = self._own(lab, request.job_id)["job"]
        known = self._result_files(job)
        for i, path in enumerate(request.paths):
            if path not in known:
                raise _Abort(Code.NOT_FOUND, f"paths[{i}]: job {job!r} has no result {path!r}")
        wanted = sorted(request.paths or known)
        prefix = contracts.job_prefix(job) + "results/"
        summary: dict[str, bytes] = {}
        with self.stream_slot(lab):
            for path in wanted:
                self._deadline(context, f"sending {path}")
                if path.startswith("summary/"):
                    summary = summary or summary_files(self.store, job)
                    data = summary[path.removeprefix("summary/")]
                    size = len(data)

                    def read(offset: int, n: int, data: bytes = data) -> bytes:
                        return data[offset : offset + n]
                else:
                    size = self.store.size(prefix + path)

                    def read(offset: int, n: int, key: str = prefix + path) -> bytes:
                        return self.store.get_range(key, offset, n)

                for start in range(0, max(size, 1), DOWNLOAD_PIECE):
                    piece = read(start, min(DOWNLOAD_PIECE, size - start)) if size else b""
                    last = start + DOWNLOAD_PIECE >= size
                    yield api_pb2.FileChunk(path=path, offset=start, data=piece, last=last)

    @_unary
    def GetCounts(self, request: Any, context: Any) -> Any:
        """Top-class counts summed from the collector's done markers (each chunk's counts,
        taken from the same probabilities as its classification CSV): no file is read."""
        from plankline.stream.results import job_status

        job = self._own(self.lab(context), request.job_id)["job"]
        counts: Counter[str] = Counter()
        try:
            records = job_status(self.store, job).records
        except KeyError:  # claimed, manifest not written yet
            records = []
        for record in records:
            counts.update(record.get("counts", {}))
        return api_pb2.ClassCounts(counts=dict(counts), rois=sum(counts.values()))


# ---------------------------------------------------------------------------- server


def server_credentials(settings: GatewaySettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (None: plaintext)."""
    if not settings.gateway_tls_cert:
        if settings.gateway_tls_client_ca:
            raise ValueError("gateway_tls_client_ca needs gateway_tls_cert (mutual TLS is TLS)")
        return None
    if not settings.gateway_tls_key:
        raise ValueError("gateway_tls_cert needs gateway_tls_key")
    pair = (
        Path(settings.gateway_tls_key).read_bytes(),
        Path(settings.gateway_tls_cert).read_bytes(),
    )
    ca = settings.gateway_tls_client_ca
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=Path(ca).read_bytes() if ca else None,
        require_client_auth=bool(ca),
    )


def method_handlers(gateway: Gateway) -> grpc.GenericRpcHandler:
    """The servicer's methods as handlers that parse the request bytes themselves.

    gRPC's generated registration parses before the handler runs and answers bytes
    that are no valid message with INTERNAL ("Exception deserializing request"); a
    client's malformed request is INVALID_ARGUMENT (naming ``request``, or
    ``messages[i]`` in a client stream), so the parsing happens here.
    """
    from google.protobuf.message import DecodeError
    from google.protobuf.message_factory import GetMessageClass

    service = api_pb2.DESCRIPTOR.services_by_name["Plankline"]
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in service.methods:
        request_type = GetMessageClass(method.input_type)
        response_type = GetMessageClass(method.output_type)

        def parse(data: bytes, context: Any, field: str, request_type: Any = request_type) -> Any:
            try:
                return request_type.FromString(data)
            except DecodeError:
                context.abort_with_status(
                    rich_status(
                        Code.INVALID_ARGUMENT,
                        f"{field}: not a {request_type.DESCRIPTOR.full_name} ({len(data)} bytes)",
                    )
                )

        behavior = getattr(gateway, method.name)
        if method.client_streaming:

            def call(
                requests: Any, context: Any, behavior: Any = behavior, parse: Any = parse
            ) -> Any:
                parsed = (parse(r, context, f"messages[{i}]") for i, r in enumerate(requests))
                return behavior(parsed, context)
        else:

            def call(
                request: Any, context: Any, behavior: Any = behavior, parse: Any = parse
            ) -> Any:
                return behavior(parse(request, context, "request"), context)

        kind = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(call, response_serializer=response_type.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


@dataclass
class RunningGateway:
    server: grpc.Server
    port: int
    gateway: Gateway
    health: health.HealthServicer

    def stop(self, grace_s: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def serve(settings: GatewaySettings, *, store: S3Store | None = None) -> RunningGateway:
    """Start the gateway (gRPC API, health, reflection) on the settings' address."""
    if not (
        settings.gateway_tokens_file
        or settings.gateway_tokens
        or settings.gateway_allow_unauthenticated
    ):
        raise ValueError(
            "no tokens: set PLANKLINE_GATEWAY_TOKENS_FILE (or _TOKENS), or switch on "
            "PLANKLINE_GATEWAY_ALLOW_UNAUTHENTICATED=1 for a local stack"
        )
    gateway = Gateway(settings, store=store)
    size = settings.gateway_max_message_bytes
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.gateway_workers, thread_name_prefix="gateway"),
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", max(size, 4 << 20)),
        ],
        maximum_concurrent_rpcs=settings.gateway_workers * 4,
    )
    server.add_generic_rpc_handlers((method_handlers(gateway),))
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.gateway_host}:{settings.gateway_port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"gateway: cannot listen on {address}")
    server.start()
    for name in ("", SERVICE_NAME):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningGateway(server, port, gateway, checker)


def main() -> None:
    """``python -m plankline.stream.gateway``: serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = GatewaySettings()
    log.info("effective config: %s", json.dumps(settings.masked()))
    running = serve(settings)
    tls = "TLS" if settings.gateway_tls_cert else "plaintext"
    log.info("gateway listening on %s:%d (%s)", settings.gateway_host, running.port, tls)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    running.stop()


if __name__ == "__main__":
    main()
