"""A thin S3 object store over the ``minio`` client, with retries for outages.

Bulk bytes of the stream (video chunks, ROI archives, tables) live here under
the deterministic keys of :mod:`plankline.stream.contracts`, so writing the
same key twice overwrites: retried steps never duplicate outputs.

Transient failures (connection refused or reset, timeouts, HTTP 5xx,
``SlowDown``) are retried with exponential backoff; credential and
permission errors fail at once with a clear message, since retrying cannot
fix them.
"""

from __future__ import annotations

import io
import mimetypes
import os
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from plankline.stream.settings import S3Settings

T = TypeVar("T")

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "ServerBusy",
        "OperationAborted",
        "XMinioServerNotInitialized",
    }
)
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
)


class StoreAuthError(PermissionError):
    """The S3 endpoint refused our credentials or permissions (not retried)."""


class StoreUnavailableError(ConnectionError):
    """The S3 endpoint stayed unreachable or failing through every retry."""


def _is_transient(error: Exception) -> bool:
    if isinstance(error, S3Error):
        return error.code in _TRANSIENT_CODES
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return True
    # minio raises ServerError for 5xx responses without an S3 error body
    return type(error).__name__ == "ServerError"


def content_type_of(key: str) -> str:
    """The ``Content-Type`` an object is stored with: its name's (``mimetypes``), else
    ``binary/octet-stream`` (what S3 itself gives an object sent without one).

    Not ``application/octet-stream``: SeaweedFS reads that as "unknown" and gzips every
    8 MB piece whose first 128 bytes compress, which those of an uncompressed video, a
    ROI tar (headers) and raw ROI pixels do; every read then decompresses them again.
    Uploading the 200 MB real-frame AVI cost ``weed`` 4.0 CPU s as
    ``application/octet-stream``, 3.0 as ``video/x-msvideo``, and reading it back 0.50
    against 0.42 (``weed`` 4.48).

    CSV is ``application/csv``, not ``text/csv``: SeaweedFS gzips every ``text/*`` object at
    its best (slowest) level and inflates it again on every read. The results' measurement
    and classification CSVs (20 MB a 24-frame chunk of real frames) cost it 31 CPU ms per
    MB stored and 11 per MB read as ``text/csv``, 17 and 2.5 as ``application/csv``
    (``weed`` 4.48); stored as sent, they take the bytes the batch CLI's files take.
    """
    suffix = os.path.splitext(key)[1].lower()
    known = _STORED_TYPES.get(suffix) or mimetypes.guess_type(key, strict=False)[0]
    return known or "binary/octet-stream"


# Video containers that ``mimetypes`` does not know or takes for something else
# (``.ts``: Qt Linguist text, which SeaweedFS would gzip; ``.mts``: a 3-D model), and
# CSV (see content_type_of).
_STORED_TYPES = {
    ".csv": "application/csv",
    ".ts": "video/mp2t",
    ".m2ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".vob": "video/mpeg",
    ".nut": "video/x-nut",
}


class _TypedParts(urllib3.PoolManager):
    """The HTTP pool of :class:`S3Store`: every part of a multipart upload carries its
    object's ``Content-Type`` (:func:`content_type_of`), as a single PUT does.

    minio sends parts without one, and SeaweedFS gzips a part of unknown type whose
    first bytes compress well: an uncompressed video's every chunk, so that every
    ranged read of it was decompressed again (4.3-4.5 ms of SeaweedFS CPU per MB read
    against 1.3-1.5 for the same video stored as sent; ``weed`` 4.48, 96 MB real-frame
    AVI). The header is added after signing: S3 checks only the signed headers.
    """

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        headers = kw.get("headers")
        if method == "PUT" and "partNumber=" in url and headers is not None:
            key = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
            headers.setdefault("Content-Type", content_type_of(key))
        return super().urlopen(method, url, redirect=redirect, **kw)


class S3Store:
    """Put/get bytes and files in one bucket of an S3 endpoint.

    Parameters
    ----------
    endpoint : str
        ``host:port`` of the S3 API (no scheme).
    access_key, secret_key : str
        Credentials; wrong ones raise :class:`StoreAuthError` on first use.
    bucket : str
        Bucket of every key; created by :meth:`ensure_bucket`.
    secure : bool
        HTTPS when true.
    retries : int
        Extra tries of one call on transient failures.
    backoff_s : float
        First retry delay in seconds; doubles each retry (capped at 5 s).
    timeout_s : float
        Connect and read timeout of one HTTP request.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        retries: int = 5,
        backoff_s: float = 0.2,
        timeout_s: float = 10.0,
    ) -> None:
        if "://" in endpoint:
            raise ValueError(f"S3 endpoint must be host:port without a scheme, got {endpoint!r}")
        if retries < 0 or backoff_s <= 0:
            raise ValueError(f"retries must be >= 0 and backoff_s > 0, got {retries}, {backoff_s}")
        self.endpoint = endpoint
        self.bucket = bucket
        self.retries = retries
        self.backoff_s = backoff_s
        # Our own retry loop owns the policy: urllib3 must not retry behind it.
        http = _TypedParts(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0),
            maxsize=16,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    @classmethod
    def from_settings(cls, settings: S3Settings) -> S3Store:
        """Build the store a service's settings describe."""
        return cls(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            retries=settings.s3_retries,
            backoff_s=settings.s3_backoff_s,
        )

    def _call(self, what: str, call: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call()
            except S3Error as error:
                if error.code in _AUTH_CODES:
                    raise StoreAuthError(
                        f"s3://{self.bucket} at {self.endpoint}: {what} refused "
                        f"({error.code}: {error.message}); check the access and secret keys"
                    ) from error
                if not _is_transient(error) or attempt == self.retries:
                    raise
            except Exception as error:
                if not _is_transient(error):
                    raise
                if attempt == self.retries:
                    raise StoreUnavailableError(
                        f"s3://{self.bucket} at {self.endpoint}: {what} failed after "
                        f"{attempt + 1} tries: {error}"
                    ) from error
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (idempotent, safe from several replicas)."""

        def make() -> None:
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as error:
                if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

        self._call("create bucket", make)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write ``data`` at ``key``, replacing any previous object (``Content-Type``:
        :func:`content_type_of` the key unless given)."""
        content_type = content_type or content_type_of(key)
        self._call(
            f"put {key}",
            lambda: self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
        )

    def get_bytes(self, key: str) -> bytes:
        """Read a whole object; ``KeyError`` names the key when it does not exist."""
        return self._get(self.bucket, key, f"get {key}")

    def _get(self, bucket: str, key: str, what: str, **request: Any) -> bytes:
        """One GET (retried as ``what``), the connection released; ``KeyError`` if missing."""

        def get() -> bytes:
            response = self.client.get_object(bucket, key, **request)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call(what, get)
        except S3Error as error:
            if error.code == "NoSuchKey":
                raise KeyError(f"s3://{bucket}/{key} does not exist") from error
            raise

    def size(self, key: str, bucket: str | None = None) -> int:
        """Bytes stored at ``key`` (of ``bucket``, default this store's); ``KeyError`` if none."""
        return self._stat(key, bucket)[0]

    def _stat(self, key: str, bucket: str | None) -> tuple[int, str]:
        bucket = bucket or self.bucket
        try:
            stat = self._call(f"stat {key}", lambda: self.client.stat_object(bucket, key))
        except S3Error as error:
            if error.code in {"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"}:
                raise KeyError(f"s3://{bucket}/{key} does not exist") from error
            raise
        return int(stat.size or 0), str(stat.etag or "")

    def get_range(
        self, key: str, offset: int, length: int, bucket: str | None = None, etag: str = ""
    ) -> bytes:
        """Bytes ``[offset, offset + length)`` of an object (one ranged GET, retried).

        ``etag`` (from :meth:`open_object`) makes the read fail rather than mix two
        versions of an object that was overwritten between reads.
        """
        if offset < 0 or length <= 0:
            raise ValueError(f"need offset >= 0 and length > 0, got {offset}, {length}")
        headers = {"If-Match": etag} if etag else None
        return self._get(
            bucket or self.bucket,
            key,
            f"get {key} bytes {offset}+{length}",
            offset=offset,
            length=length,
            request_headers=headers,
        )

    def open_object(
        self,
        key: str,
        bucket: str | None = None,
        block_size: int = 1 << 20,
        readahead_bytes: int = 16 << 20,
    ) -> RangedObjectReader:
        """A seekable read-only file over ``key`` that fetches only the blocks read.

        PyAV opens it like a local file (``iter_frames`` on it reads just the frames
        asked for), so a video already in the object store is processed in place.
        """
        size, etag = self._stat(key, bucket)
        return RangedObjectReader(
            self, key, bucket or self.bucket, size, etag, block_size, readahead_bytes
        )

    def put_file(self, key: str, path: Path | str) -> None:
        """Upload a local file to ``key`` (multipart for large files)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not a file, cannot upload to s3://{self.bucket}/{key}"
            )
        self._call(
            f"put {key}",
            lambda: self.client.fput_object(
                self.bucket, key, str(path), content_type=content_type_of(key)
            ),
        )

    def get_file(self, key: str, path: Path | str) -> Path:
        """Download ``key`` to ``path`` (parent folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._call(f"get {key}", lambda: self.client.fget_object(self.bucket, key, str(path)))
        except S3Error as error:
            if error.code == "NoSuchKey":
                raise KeyError(f"s3://{self.bucket}/{key} does not exist") from error
            raise
        return path

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

        def stat() -> bool:
            try:
                self.client.stat_object(self.bucket, key)
            except S3Error as error:
                if error.code in {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}:
                    return False
                raise
            return True

        return self._call(f"stat {key}", stat)

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""
        return self._call(
            f"list {prefix}",
            lambda: sorted(
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None
            ),
        )

    def list_etags(self, prefix: str = "") -> dict[str, str]:
        """Every key under ``prefix`` with its ETag (changes whenever the object does)."""
        return self._call(
            f"list {prefix}",
            lambda: {
                o.object_name: str(o.etag or "")
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None
            },
        )

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is already gone)."""
        self._call(f"delete {key}", lambda: self.client.remove_object(self.bucket, key))


class RangedObjectReader(io.RawIOBase):
    """Read-only, seekable file over one S3 object, fetched in blocks by ranged GETs.

    Readers such as FFmpeg read a container's header, jump to its index at the end,
    then read frame after frame; each read touches a few blocks, fetched once (one
    GET for a run of missing blocks) and kept in an LRU cache of ``cache_bytes``
    where the first and last blocks (header, index) stay, so opening the video again
    (each read of a chunk opens it) costs nothing and a chunk of a long video costs
    its own bytes, not the whole object. Reads that follow each other fetch ahead,
    doubling up to ``readahead_bytes`` per GET: an object store pays per request
    (SeaweedFS spent a third less CPU per MB read with 16 MiB GETs than with 4 MiB
    ones), while a jump (to the index, or to a chunk's first frame) fetches one block.
    ``bytes_fetched``/``requests`` count the traffic.

    Parameters
    ----------
    store : S3Store
        Client, credentials and retry policy.
    key, bucket : str
        The object.
    size : int
        Its length in bytes (from a HEAD).
    etag : str
        Its ETag: every GET is conditional on it, so an overwrite mid-read fails
        instead of mixing two versions.
    block_size : int
        Bytes per block (>= 64 KiB).
    readahead_bytes : int
        Most bytes one GET fetches for sequential reads.
    cache_bytes : int
        Most bytes cached (at least 4 blocks, and the read-ahead).
    """

    def __init__(
        self,
        store: S3Store,
        key: str,
        bucket: str,
        size: int,
        etag: str = "",
        block_size: int = 1 << 20,
        readahead_bytes: int = 16 << 20,
        cache_bytes: int = 64 << 20,
    ) -> None:
        super().__init__()
        if block_size < 1 << 16:
            raise ValueError(f"{key}: need block_size >= 64 KiB, got {block_size}")
        self.store, self.key, self.bucket = store, key, bucket
        self.size, self.etag = size, etag
        self.block_size = block_size
        self.max_ahead = max(1, readahead_bytes // block_size)
        self.cache_blocks = max(4, cache_bytes // block_size, 2 * self.max_ahead)
        self._ahead = 1
        self._last_read = -2  # last block of the previous read
        self._pinned = {0, max(0, size - 1) // block_size}
        self.name = f"s3://{bucket}/{key}"
        # which object, in which version: what a reader may cache about it (the frame
        # index of an MPEG stream, one pass over the whole object) holds while it matches
        self.identity = (store.endpoint, bucket, key, etag, size)
        self.bytes_fetched = 0
        self.requests = 0
        self._pos = 0
        self._blocks: OrderedDict[int, memoryview] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"{self.name}: unsupported whence {whence}")
        if base + offset < 0:
            raise ValueError(f"{self.name}: seek to {base + offset} before the start")
        self._pos = base + offset
        return self._pos

    def _fetch(self, first: int, last: int) -> None:
        """Fetch blocks ``first..last`` (inclusive) that are not cached, in runs."""
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        while missing:
            run = [missing.pop(0)]
            while missing and missing[0] == run[-1] + 1:
                run.append(missing.pop(0))
            start = run[0] * self.block_size
            length = min(self.size, (run[-1] + 1) * self.block_size) - start
            data = self.store.get_range(self.key, start, length, self.bucket, self.etag)
            if len(data) != length:
                raise OSError(f"{self.name}: asked bytes {start}+{length}, got {len(data)}")
            self.bytes_fetched += length
            self.requests += 1
            view = memoryview(data)
            for i, block in enumerate(run):
                self._blocks[block] = view[i * self.block_size : (i + 1) * self.block_size]

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all the rest when negative)."""
        want = self.size - self._pos if size is None or size < 0 else size
        want = min(want, self.size - self._pos)
        if want <= 0:
            return b""
        first, last = self._pos // self.block_size, (self._pos + want - 1) // self.block_size
        if any(b not in self._blocks for b in range(first, last + 1)):
            sequential = first in (self._last_read, self._last_read + 1)
            self._ahead = min(2 * self._ahead, self.max_ahead) if sequential else 1
            end = min((self.size - 1) // self.block_size, max(last, first + self._ahead - 1))
            self._fetch(first, end)
        self._last_read = last
        parts = []
        for block in range(first, last + 1):
            self._blocks.move_to_end(block)
            lo = max(0, self._pos - block * self.block_size)
            hi = min(self.block_size, self._pos + want - block * self.block_size)
            parts.append(self._blocks[block][lo:hi])
        keep = max(self.cache_blocks, last - first + 1 + len(self._pinned))
        for block in [b for b in self._blocks if b not in self._pinned][: len(self._blocks) - keep]:
            del self._blocks[block]
        self._pos += want
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)
