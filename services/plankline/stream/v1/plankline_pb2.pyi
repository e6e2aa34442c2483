from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChunkRef(_message.Message):
    __slots__ = ("job_id", "video_id", "chunk_index", "chunk_name")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_NAME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    video_id: str
    chunk_index: int
    chunk_name: str
    def __init__(self, job_id: _Optional[str] = ..., video_id: _Optional[str] = ..., chunk_index: _Optional[int] = ..., chunk_name: _Optional[str] = ...) -> None: ...

class VideoChunk(_message.Message):
    __slots__ = ("chunk", "first_frame", "n_frames", "fps", "video_key", "bucket", "video_name", "frame_height", "segment_first_frame", "segment_n_frames", "video_n_frames", "segment_format")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    N_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_KEY_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    VIDEO_NAME_FIELD_NUMBER: _ClassVar[int]
    FRAME_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_N_FRAMES_FIELD_NUMBER: _ClassVar[int]
    VIDEO_N_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    chunk: ChunkRef
    first_frame: int
    n_frames: int
    fps: float
    video_key: str
    bucket: str
    video_name: str
    frame_height: int
    segment_first_frame: int
    segment_n_frames: int
    video_n_frames: int
    segment_format: str
    def __init__(self, chunk: _Optional[_Union[ChunkRef, _Mapping]] = ..., first_frame: _Optional[int] = ..., n_frames: _Optional[int] = ..., fps: _Optional[float] = ..., video_key: _Optional[str] = ..., bucket: _Optional[str] = ..., video_name: _Optional[str] = ..., frame_height: _Optional[int] = ..., segment_first_frame: _Optional[int] = ..., segment_n_frames: _Optional[int] = ..., video_n_frames: _Optional[int] = ..., segment_format: _Optional[str] = ...) -> None: ...

class RoiBatch(_message.Message):
    __slots__ = ("chunk", "roi_archive_key", "positions_key", "n_rois", "bucket", "error")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ROI_ARCHIVE_KEY_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_KEY_FIELD_NUMBER: _ClassVar[int]
    N_ROIS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chunk: ChunkRef
    roi_archive_key: str
    positions_key: str
    n_rois: int
    bucket: str
    error: str
    def __init__(self, chunk: _Optional[_Union[ChunkRef, _Mapping]] = ..., roi_archive_key: _Optional[str] = ..., positions_key: _Optional[str] = ..., n_rois: _Optional[int] = ..., bucket: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class MeasurementResult(_message.Message):
    __slots__ = ("chunk", "measurements_key", "roi_archive_key", "n_rois", "bucket")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_KEY_FIELD_NUMBER: _ClassVar[int]
    ROI_ARCHIVE_KEY_FIELD_NUMBER: _ClassVar[int]
    N_ROIS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    chunk: ChunkRef
    measurements_key: str
    roi_archive_key: str
    n_rois: int
    bucket: str
    def __init__(self, chunk: _Optional[_Union[ChunkRef, _Mapping]] = ..., measurements_key: _Optional[str] = ..., roi_archive_key: _Optional[str] = ..., n_rois: _Optional[int] = ..., bucket: _Optional[str] = ...) -> None: ...

class ClassificationResult(_message.Message):
    __slots__ = ("chunk", "classifications_key", "n_rois", "model_name", "model_version", "bucket")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATIONS_KEY_FIELD_NUMBER: _ClassVar[int]
    N_ROIS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    chunk: ChunkRef
    classifications_key: str
    n_rois: int
    model_name: str
    model_version: str
    bucket: str
    def __init__(self, chunk: _Optional[_Union[ChunkRef, _Mapping]] = ..., classifications_key: _Optional[str] = ..., n_rois: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., bucket: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("input_topic", "input_partition", "input_offset", "input_key", "input_value", "error", "service", "attempts", "failed_at_unix_ms")
    INPUT_TOPIC_FIELD_NUMBER: _ClassVar[int]
    INPUT_PARTITION_FIELD_NUMBER: _ClassVar[int]
    INPUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    INPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    input_topic: str
    input_partition: int
    input_offset: int
    input_key: bytes
    input_value: bytes
    error: str
    service: str
    attempts: int
    failed_at_unix_ms: int
    def __init__(self, input_topic: _Optional[str] = ..., input_partition: _Optional[int] = ..., input_offset: _Optional[int] = ..., input_key: _Optional[bytes] = ..., input_value: _Optional[bytes] = ..., error: _Optional[str] = ..., service: _Optional[str] = ..., attempts: _Optional[int] = ..., failed_at_unix_ms: _Optional[int] = ...) -> None: ...
