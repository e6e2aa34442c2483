"""Typed Python client of the gateway's ``plankline.v1.Plankline`` API.

Example
-------
::

    from plankline.stream.client import PlanklineClient

    with PlanklineClient("plankline.example.org:443", token="...", ca="ca.pem") as api:
        print([m.name for m in api.models()])
        result = api.classify([Path("roi.png").read_bytes()])
        job = api.submit_video(Path("20260101120000.000.avi"), job="cruise42")
        for event in api.watch("cruise42"):
            print(event.job.chunks_done, "/", event.job.chunks_planned)
        api.download_results("cruise42", Path("out"))

Unary calls are retried with exponential backoff on UNAVAILABLE (a restarting
gateway, object store or broker); an upload cut by UNAVAILABLE resumes from what
the store holds (``GetUpload``), so a video is never sent twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from plankline.stream.v1 import api_pb2, api_pb2_grpc

T = TypeVar("T")
UPLOAD_PIECE = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PlanklineClient:
    """One channel to a gateway; every method is one call (see ``api.proto``).

    Parameters
    ----------
    target : str
        ``host:port`` of the gateway.
    token : str, optional
        The lab's bearer token (None only for a gateway that allows unauthenticated calls).
    ca, cert, key : Path, optional
        PEM files: ``ca`` turns on TLS (the CA that signed the server's certificate),
        ``cert`` + ``key`` are this lab's client certificate for mutual TLS.
    retries, backoff_s : int, float
        Retries of a unary call (and upload resumes) on UNAVAILABLE; the first wait,
        doubled each time.
    timeout_s : float
        Deadline of each unary call.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        retries: int = 4,
        backoff_s: float = 0.2,
        timeout_s: float = 60.0,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if ca is not None or cert is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(ca).read_bytes() if ca else None,
                private_key=Path(key).read_bytes() if key else None,
                certificate_chain=Path(cert).read_bytes() if cert else None,
            )
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = api_pb2_grpc.PlanklineStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PlanklineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, call: Callable[[], T]) -> T:
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")

    def _unary(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        rpc = getattr(self.stub, method)
        return self._retry(
            lambda: rpc(request, metadata=self.metadata, timeout=timeout_s or self.timeout_s)
        )

    # ------------------------------------------------------------------ direct calls

    @staticmethod
    def _images(images: Iterable[bytes | tuple[str, bytes]]) -> list[api_pb2.Image]:
        out = []
        for item in images:
            ident, data = item if isinstance(item, tuple) else ("", item)
            out.append(api_pb2.Image(id=ident, data=data))
        return out

    def classify(
        self, images: Iterable[bytes | tuple[str, bytes]], *, model: str = ""
    ) -> api_pb2.ClassifyResponse:
        """Classify encoded images (bytes, or ``(id, bytes)``), one request."""
        request = api_pb2.ClassifyRequest(images=self._images(images), model=model)
        return self._unary("Classify", request)

    def classify_stream(
        self, batches: Iterable[Iterable[bytes | tuple[str, bytes]]], *, model: str = ""
    ) -> Iterator[api_pb2.ClassifyResponse]:
        """Classify many batches over one bidirectional stream (one response per batch)."""
        requests = (
            api_pb2.ClassifyRequest(images=self._images(batch), model=model) for batch in batches
        )
        return self.stub.ClassifyStream(requests, metadata=self.metadata)

    def measure(
        self,
        images: Iterable[bytes | tuple[str, bytes]],
        masks: Iterable[bytes] | None = None,
        *,
        pixel_size_um: float = 0.0,
    ) -> dict[str, list[float]]:
        """Measurement columns (name -> one value per image), as ``measure_rois``."""
        request = api_pb2.MeasureRequest(images=self._images(images), pixel_size_um=pixel_size_um)
        for image, mask in zip(request.images, masks or [], strict=False):
            image.mask = mask
        response = self._unary("Measure", request)
        return {column.name: list(column.values) for column in response.columns}

    def models(self) -> list[api_pb2.ModelInfo]:
        return list(self._unary("ListModels", api_pb2.ListModelsRequest()).models)

    # ------------------------------------------------------------------ jobs

    def submit_video(
        self,
        path: Path,
        *,
        job: str,
        settings: Mapping[str, Any] | None = None,
        progress: Callable[[int, int], None] | None = None,
        piece_bytes: int = UPLOAD_PIECE,
    ) -> api_pb2.Job:
        """Upload a video (resuming what the store already holds) and submit it as ``job``.

        ``progress(bytes_sent_or_stored, size)`` is called after each piece.
        """
        path = Path(path)
        sha, size = file_sha256(path), path.stat().st_size
        text = {k: str(v) for k, v in (settings or {}).items()}
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            upload = self._unary(
                "GetUpload", api_pb2.GetUploadRequest(sha256=sha, video_name=path.name)
            )
            offset = size if upload.complete else upload.bytes_stored
            header = api_pb2.VideoHeader(
                job_id=job,
                video_name=path.name,
                sha256=sha,
                size=size,
                offset=offset,
                settings=text,
            )

            def messages(
                offset: int = offset, header: api_pb2.VideoHeader = header
            ) -> Iterator[Any]:
                yield api_pb2.SubmitVideoRequest(header=header)
                if offset >= size:
                    return
                with open(path, "rb") as f:
                    f.seek(offset)
                    sent = offset
                    for piece in iter(lambda: f.read(piece_bytes), b""):
                        yield api_pb2.SubmitVideoRequest(data=piece)
                        sent += len(piece)
                        if progress:
                            progress(sent, size)

            try:
                return self.stub.SubmitVideo(messages(), metadata=self.metadata)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")

    def submit_reference(
        self, key: str, *, job: str, settings: Mapping[str, Any] | None = None
    ) -> api_pb2.Job:
        request = api_pb2.SubmitReferenceRequest(
            job_id=job, key=key, settings={k: str(v) for k, v in (settings or {}).items()}
        )
        return self._unary("SubmitReference", request)

    def job(self, job: str) -> api_pb2.Job:
        return self._unary("GetJob", api_pb2.GetJobRequest(job_id=job))

    def jobs(self) -> list[api_pb2.Job]:
        return list(self._unary("ListJobs", api_pb2.ListJobsRequest()).jobs)

    def cancel(self, job: str) -> api_pb2.Job:
        return self._unary("CancelJob", api_pb2.GetJobRequest(job_id=job))

    def watch(self, job: str, *, timeout_s: float | None = None) -> Iterator[api_pb2.JobEvent]:
        """Progress events until the job settles (or ``timeout_s``: DEADLINE_EXCEEDED)."""
        return self.stub.WatchJob(
            api_pb2.GetJobRequest(job_id=job), metadata=self.metadata, timeout=timeout_s
        )

    # ------------------------------------------------------------------ results

    def results(self, job: str) -> list[api_pb2.ResultFile]:
        return list(self._unary("ListResults", api_pb2.GetJobRequest(job_id=job)).files)

    def counts(self, job: str) -> dict[str, int]:
        return dict(self._unary("GetCounts", api_pb2.GetJobRequest(job_id=job)).counts)

    def download_results(self, job: str, out_dir: Path, paths: Iterable[str] = ()) -> list[Path]:
        """Write the job's files (all, or ``paths``) under ``out_dir`` in the batch layout."""
        out_dir = Path(out_dir)
        request = api_pb2.DownloadResultsRequest(job_id=job, paths=list(paths))
        written: list[Path] = []
        handle = None
        for piece in self.stub.DownloadResults(request, metadata=self.metadata):
            target = out_dir / piece.path
            if ".." in Path(piece.path).parts or Path(piece.path).is_absolute():
                raise ValueError(f"server sent a result path outside {out_dir}: {piece.path!r}")
            if piece.offset == 0:
                if handle is not None:
                    handle.close()
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = open(target, "wb")  # noqa: SIM115 - closed at the file's last piece
                written.append(target)
            assert handle is not None
            handle.write(piece.data)
            if piece.last:
                handle.close()
                handle = None
        if handle is not None:
            handle.close()
        return written
