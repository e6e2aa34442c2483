"""S3Store against a real SeaweedFS: round trips, listing, refused keys, outages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from plankline.stream.contracts import chunk_key, chunk_prefix
from plankline.stream.stack import ServerHandle
from plankline.stream.store import S3Store, StoreAuthError, StoreUnavailableError

pytestmark = pytest.mark.integration


def test_bytes_and_files_round_trip_and_a_rewrite_overwrites(
    s3_store: S3Store, tmp_path: Path
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    key = chunk_key("job", "vid", 2, "rois.tar")
    s3_store.put_bytes(key, payload)
    assert s3_store.get_bytes(key) == payload
    s3_store.put_bytes(key, b"second")  # a retried step writes the same key again
    assert s3_store.get_bytes(key) == b"second"
    assert s3_store.list(chunk_prefix("job", "vid", 2)) == [key]

    source = tmp_path / "in.csv"
    source.write_bytes(b"image,a,b\n1,0.2,0.8\n")
    csv_key = chunk_key("job", "vid", 2, "classifications.csv")
    s3_store.put_file(csv_key, source)
    assert s3_store.get_file(csv_key, tmp_path / "out" / "c.csv").read_bytes() == (
        source.read_bytes()
    )
    assert s3_store.exists(csv_key)
    assert s3_store.list(chunk_prefix("job", "vid", 2)) == sorted([key, csv_key])
    s3_store.delete(csv_key)
    assert not s3_store.exists(csv_key)


def test_listing_is_limited_to_the_prefix(s3_store: S3Store) -> None:
    for chunk in range(3):
        s3_store.put_bytes(chunk_key("job", "vid", chunk, "video"), b"x")
    s3_store.put_bytes(chunk_key("job", "other", 0, "video"), b"x")
    assert s3_store.list("jobs/job/videos/vid/") == [
        chunk_key("job", "vid", c, "video") for c in range(3)
    ]


def test_missing_key_raises_key_error_naming_it(s3_store: S3Store) -> None:
    with pytest.raises(KeyError, match="nothing-here"):
        s3_store.get_bytes("nothing-here")
    assert not s3_store.exists("nothing-here")


def test_wrong_secret_key_is_refused_without_retrying(s3_server: ServerHandle) -> None:
    store = S3Store(
        s3_server.endpoint,
        s3_server.extra["access_key"],
        "wrong-secret",
        "refused",
        retries=3,
        backoff_s=5.0,
    )
    with pytest.raises(StoreAuthError, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccess"):
        store.put_bytes("k", b"data")  # auth errors are not retried


def test_unknown_access_key_is_refused(s3_server: ServerHandle) -> None:
    store = S3Store(s3_server.endpoint, "nobody", s3_server.extra["secret_key"], "refused")
    with pytest.raises(StoreAuthError):
        store.ensure_bucket()


def test_an_unreachable_endpoint_is_retried_then_reported() -> None:
    from plankline.stream.stack import free_port

    store = S3Store(
        f"127.0.0.1:{free_port()}", "a", "b", "bucket", retries=2, backoff_s=0.01, timeout_s=0.5
    )
    with pytest.raises(StoreUnavailableError, match="after 3 tries"):
        store.put_bytes("k", b"x")


def test_one_server_holds_many_buckets(s3_server: ServerHandle) -> None:
    # Every bucket takes SeaweedFS volumes of its own; with volumes sized from the free
    # disk, a disk with 16 GiB free ran out of them after a dozen buckets (S3 InternalError).
    for k in range(40):
        store = S3Store(
            s3_server.endpoint,
            s3_server.extra["access_key"],
            s3_server.extra["secret_key"],
            f"many-buckets-{k:02d}",
            retries=2,
        )
        store.ensure_bucket()
        store.put_bytes("probe", b"x" * 1000)
        assert store.get_bytes("probe") == b"x" * 1000


def test_uploads_are_stored_as_sent_not_gzipped_with_their_names_content_type(
    s3_server: ServerHandle, s3_store: S3Store, tmp_path: Path
) -> None:
    """A multipart upload (minio: parts above 5 MiB) of a compressible file, like an
    uncompressed video of a bright background, and a ROI tar in one PUT: SeaweedFS gzips
    an 8 MB piece of unknown type (none, or ``application/octet-stream``) whose first
    128 bytes compress, and every ranged read then decompressed it again; it gzips every
    ``text/*`` object, so a results CSV goes as ``application/csv``."""
    import json
    import urllib.request

    source = tmp_path / "video.avi"
    frame = b"\xf0" * (1 << 20)  # every piece's first bytes compress
    source.write_bytes(b"RIFF" + frame * 24)  # ~25 MB: several parts
    s3_store.put_file("videos/v.avi", source)
    s3_store.put_bytes("chunks/rois.tar", b"\0" * (3 << 20))
    s3_store.put_bytes("chunks/rois.npz", b"\0" * (3 << 20))
    table = b"image,area\n" + b"20180706170805.476_000001_0001,35\n" * 100_000
    s3_store.put_bytes("results/measurements/c.csv", table)
    for key, kind in [
        ("videos/v.avi", "video/x-msvideo"),
        ("chunks/rois.tar", "application/x-tar"),
        ("chunks/rois.npz", "binary/octet-stream"),
        ("results/measurements/c.csv", "application/csv"),  # text/* would be gzipped
    ]:
        url = f"http://127.0.0.1:{s3_server.ports['filer']}/buckets/{s3_store.bucket}/{key}"
        meta = json.loads(urllib.request.urlopen(url + "?metadata=true").read())
        assert meta["chunks"] and not any(c.get("is_compressed") for c in meta["chunks"]), key
        assert s3_store.client.stat_object(s3_store.bucket, key).content_type == kind
        assert len(meta["chunks"]) > 1 or key != "videos/v.avi"  # several parts
    assert s3_store.get_bytes("videos/v.avi") == source.read_bytes()


def test_content_types_come_from_the_names() -> None:
    from plankline.stream.store import content_type_of

    assert content_type_of("raw/Cast 3.AVI") == "video/x-msvideo"
    assert content_type_of("raw/x.ts") == "video/mp2t"  # not mimetypes' Qt Linguist text
    assert content_type_of("jobs/j/results/measurements/c.csv") == "application/csv"
    assert content_type_of("jobs/j/chunks/v/0/probabilities.npy") == "binary/octet-stream"
