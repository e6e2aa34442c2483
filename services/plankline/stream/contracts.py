"""Kafka topics, message keys, S3 object keys and protobuf (de)serialisation of plankline.v1.

Every service speaks through these helpers, so the contract lives in one
place: ``protos/plankline/v1/plankline.proto`` defines the messages, this
module names the topics, derives the deterministic keys and turns bytes into
typed messages with errors that say which topic/partition/offset was bad.

Example
-------
>>> ref = chunk_ref("cruise42", "20260101120000.000", 3, "20260101120003.000")
>>> chunk_key(ref.job_id, ref.video_id, ref.chunk_index, "rois.tar")
'jobs/cruise42/videos/20260101120000.000/chunks/000003/rois.tar'
>>> message_key(ref.video_id, ref.chunk_index)
b'20260101120000.000/000003'
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

from google.protobuf.message import DecodeError, Message

from plankline.stream.v1.plankline_pb2 import (
    ChunkRef,
    ClassificationResult,
    Failure,
    MeasurementResult,
    RoiBatch,
    VideoChunk,
)

__all__ = [
    "ARTIFACTS",
    "RESULT_KINDS",
    "TOPICS",
    "TOPIC_CHUNKS",
    "TOPIC_CLASSIFICATIONS",
    "TOPIC_DEAD_LETTER",
    "TOPIC_MEASUREMENTS",
    "TOPIC_ROIS",
    "ChunkRef",
    "ClassificationResult",
    "Failure",
    "MeasurementResult",
    "RoiBatch",
    "VideoChunk",
    "cancel_key",
    "chunk_key",
    "chunk_prefix",
    "chunk_ref",
    "decode",
    "encode",
    "job_prefix",
    "manifest_key",
    "message_key",
    "parse",
    "result_key",
    "source_key",
]

TOPIC_CHUNKS: Final = "plankline.chunks"
TOPIC_ROIS: Final = "plankline.rois"
TOPIC_MEASUREMENTS: Final = "plankline.measurements"
TOPIC_CLASSIFICATIONS: Final = "plankline.classifications"
TOPIC_DEAD_LETTER: Final = "plankline.dead-letter"

#: Value type carried by each topic.
TOPICS: Final[dict[str, type[Message]]] = {
    TOPIC_CHUNKS: VideoChunk,
    TOPIC_ROIS: RoiBatch,
    TOPIC_MEASUREMENTS: MeasurementResult,
    TOPIC_CLASSIFICATIONS: ClassificationResult,
    TOPIC_DEAD_LETTER: Failure,
}

#: Object names allowed under a chunk's prefix (see the .proto header).
ARTIFACTS: Final = frozenset(
    {
        "video",
        "rois.tar",
        "positions.csv",
        "measurements.csv",
        "classifications.csv",
        # added for the services: exact typed copies the collector joins, and markers
        "rois.npz",
        "measurements.npz",
        "probabilities.npy",
        "failed.json",
        "done.json",
    }
)

#: Result kinds of a job, as the batch project's folders (``plankline results`` layout).
RESULT_KINDS: Final = {
    "rois": ("segmentation", ".tar"),
    "measurements": ("measurements", ".csv"),
    "classification": ("classification", ".csv"),
    "ecotaxa": ("ecotaxa", ".zip"),
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
M = TypeVar("M", bound=Message)


def _check_id(field: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value) or len(value) > 200:
        raise ValueError(
            f"{field} must be 1-200 characters of [A-Za-z0-9._-] starting with a letter or "
            f"digit (it becomes part of S3 and Kafka keys), got {value!r}"
        )
    return value


def _check_chunk(chunk_index: int) -> int:
    if isinstance(chunk_index, bool) or not isinstance(chunk_index, int):
        raise ValueError(f"chunk_index must be an int, got {type(chunk_index).__name__}")
    if not 0 <= chunk_index < 1_000_000:
        raise ValueError(f"chunk_index must be in [0, 999999], got {chunk_index}")
    return chunk_index


def chunk_ref(job_id: str, video_id: str, chunk_index: int, chunk_name: str = "") -> ChunkRef:
    """Build the validated reference that every message of one chunk carries.

    ``chunk_name`` (the chunk's start timestamp) names output files for users;
    it defaults to ``<video_id>-<chunk_index:06d>``.
    """
    _check_id("job_id", job_id)
    _check_id("video_id", video_id)
    _check_chunk(chunk_index)
    name = chunk_name or f"{video_id}-{chunk_index:06d}"
    _check_id("chunk_name", name)
    return ChunkRef(job_id=job_id, video_id=video_id, chunk_index=chunk_index, chunk_name=name)


def message_key(video_id: str, chunk_index: int) -> bytes:
    """Kafka key of every message about one chunk: same key, same partition, kept in order."""
    return f"{_check_id('video_id', video_id)}/{_check_chunk(chunk_index):06d}".encode()


def chunk_prefix(job_id: str, video_id: str, chunk_index: int) -> str:
    """S3 prefix holding every object of one chunk (ends with ``/``)."""
    return (
        f"jobs/{_check_id('job_id', job_id)}/videos/{_check_id('video_id', video_id)}"
        f"/chunks/{_check_chunk(chunk_index):06d}/"
    )


def chunk_key(job_id: str, video_id: str, chunk_index: int, artifact: str) -> str:
    """Deterministic S3 key of one artifact of one chunk, so a retried step overwrites it."""
    if artifact not in ARTIFACTS:
        raise ValueError(f"artifact must be one of {sorted(ARTIFACTS)}, got {artifact!r}")
    return chunk_prefix(job_id, video_id, chunk_index) + artifact


def job_prefix(job_id: str) -> str:
    """S3 prefix of everything one job wrote (ends with ``/``)."""
    return f"jobs/{_check_id('job_id', job_id)}/"


def manifest_key(job_id: str) -> str:
    """The job manifest: settings and the planned chunks of every video (JSON)."""
    return job_prefix(job_id) + "manifest.json"


def cancel_key(job_id: str) -> str:
    """The job's cancellation marker: while it exists every service skips the job's messages."""
    return job_prefix(job_id) + "cancelled.json"


def source_key(job_id: str, video_id: str) -> str:
    """A whole source video, uploaded once per job; segmenters read its frames by range."""
    return f"{job_prefix(job_id)}videos/{_check_id('video_id', video_id)}/source"


def result_key(job_id: str, kind: str, chunk_name: str) -> str:
    """Final per-chunk output, in the batch layout: ``results/<folder>/<chunk><ext>``."""
    if kind not in RESULT_KINDS:
        raise ValueError(f"kind must be one of {sorted(RESULT_KINDS)}, got {kind!r}")
    folder, ext = RESULT_KINDS[kind]
    return f"{job_prefix(job_id)}results/{folder}/{_check_id('chunk_name', chunk_name)}{ext}"


def encode(message: Message) -> bytes:
    """Serialise a message, refusing one whose chunk reference is missing or invalid."""
    if "chunk" in message.DESCRIPTOR.fields_by_name:
        if not message.HasField("chunk"):
            raise ValueError(f"{message.DESCRIPTOR.name}.chunk is required")
        ref = message.chunk
        chunk_ref(ref.job_id, ref.video_id, ref.chunk_index, ref.chunk_name)
    return message.SerializeToString(deterministic=True)


def decode(message_type: type[M], data: bytes, *, where: str = "") -> M:
    """Parse bytes into ``message_type``; ``where`` (topic/partition/offset) goes in errors."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise ValueError(
            f"{where or 'message'}: not a valid {message_type.DESCRIPTOR.full_name} ({error})"
        ) from error
    return message


def parse(topic: str, data: bytes, *, partition: int = -1, offset: int = -1) -> Message:
    """Parse a record value by the type its topic carries (see ``TOPICS``)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; known: {sorted(TOPICS)}")
    return decode(TOPICS[topic], data, where=f"{topic}[{partition}]@{offset}")
