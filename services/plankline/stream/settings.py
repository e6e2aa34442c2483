"""Typed settings of the streaming services (environment prefix ``PLANKLINE_``).

Defaults match ``plankline stack up`` on a laptop except the ports, which the
stack prints; in Kubernetes every field comes from the environment, e.g.
``PLANKLINE_BOOTSTRAP_SERVERS=kafka:9092 PLANKLINE_S3_ENDPOINT=minio:9000``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from plankline.stream.contracts import TOPIC_DEAD_LETTER


class S3Settings(BaseSettings):
    """Where bulk bytes live: an S3 endpoint (SeaweedFS locally, MinIO in production)."""

    model_config = SettingsConfigDict(env_prefix="PLANKLINE_", extra="ignore")

    s3_endpoint: str = Field("127.0.0.1:8333", description="host:port, no scheme.")
    s3_access_key: str = "plankline"
    s3_secret_key: SecretStr = SecretStr("plankline-secret")
    s3_bucket: str = "plankline"
    s3_secure: bool = Field(False, description="HTTPS to the S3 endpoint.")
    s3_region: str = "us-east-1"
    s3_retries: int = Field(
        5, ge=0, description="Retries of one S3 call on outages (5xx, refused)."
    )
    s3_backoff_s: float = Field(0.2, gt=0, description="First retry delay; doubles each time.")
    s3_read_block_bytes: int = Field(
        1 << 20,
        ge=1 << 16,
        description="Smallest ranged GET when a service reads part of a large object (a "
        "video by frame index): what a jump to a header, an index or a frame costs.",
    )
    s3_readahead_bytes: int = Field(
        16 << 20,
        ge=1 << 16,
        description="Largest ranged GET of sequential reads (fewer, larger requests cost "
        "the object store less CPU per byte).",
    )

    def masked(self) -> dict[str, Any]:
        """The effective configuration for printing at start, secrets masked."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


class RunnerSettings(S3Settings):
    """Everything the shared service runner needs (Kafka, S3, retries, HTTP probes)."""

    service_name: str = Field("plankline", description="Names metrics, logs and dead letters.")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port.")
    group_id: str = Field("plankline", description="Kafka consumer group of this service.")
    input_topics: list[str] = Field(default_factory=list, description="JSON list in env.")
    dead_letter_topic: str = TOPIC_DEAD_LETTER
    max_attempts: int = Field(3, ge=1, description="Tries of one message before dead-lettering.")
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(10.0, ge=0)
    session_timeout_ms: int = Field(
        10_000, ge=1000, description="Group session; Tansu's first join takes about half of it."
    )
    heartbeat_interval_ms: int = Field(1_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000, description="Longest handle() allowed.")
    max_poll_records: int = Field(16, ge=1)
    poll_timeout_ms: int = Field(500, ge=10)
    max_request_size: int = Field(4 * 1024 * 1024, ge=1024)
    produce_timeout_s: float = Field(30.0, gt=0, description="Wait for a downstream ack.")
    http_host: str = Field("127.0.0.1", description="Probe/metrics address (0.0.0.0 in a pod).")
    http_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port.")


class ServiceSettings(RunnerSettings):
    """A pipeline service: the runner's settings plus how it reaches Triton.

    How a chunk is processed (``PipelineSettings``: chunk size, flat-field,
    segmentation, model...) is NOT read here: ``plankline submit`` records it in
    the job manifest in S3 and every service of that job reads it from there, so
    all replicas, and the batch CLI given the same settings, process a chunk alike.
    """

    inference: Literal["onnxruntime", "triton"] = Field(
        "onnxruntime", description="Classifier backend: in-process ONNX Runtime or Triton gRPC."
    )
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC host:port.")
    triton_model: str = Field("plankline_classifier", description="Model name in Triton.")
    triton_batch: int = Field(64, ge=1, description="ROIs per Triton request.")
    triton_concurrency: int = Field(
        4, ge=1, description="Requests in flight, so Triton's dynamic batcher fills."
    )
    triton_timeout_s: float = Field(60.0, gt=0)
    work_dir: str | None = Field(None, description="Scratch folder (default: system temp).")


class GatewaySettings(S3Settings):
    """The public gRPC gateway (``python -m plankline.stream.gateway``): where it listens,
    who may call it, and the limits that keep one lab from exhausting it.

    Its own fields come from ``PLANKLINE_GATEWAY_*``; the object store and broker from
    the stack's ``PLANKLINE_S3_*`` and ``PLANKLINE_BOOTSTRAP_SERVERS``, like the services.

    Tokens are never stored or printed in clear: ``gateway_tokens_file`` (JSON ``{"lab": "<sha256
    hex of the token>"}``, re-read when it changes, so removing a line revokes a token at
    once) and/or ``gateway_tokens`` (the same JSON in an env secret, ``PLANKLINE_GATEWAY_TOKENS``).
    """

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka, for submitted jobs.")
    gateway_host: str = Field("127.0.0.1", description="Listen address (0.0.0.0 in a pod).")
    gateway_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port.")
    gateway_tokens_file: str | None = Field(None, description="JSON lab -> sha256(token) hex.")
    gateway_tokens: SecretStr | None = Field(None, description="The same JSON, as a secret.")
    gateway_allow_unauthenticated: bool = Field(
        False, description="Serve callers without a token as lab 'anonymous' (local stack only)."
    )
    gateway_tls_cert: str | None = Field(None, description="PEM server certificate (enables TLS).")
    gateway_tls_key: str | None = Field(None, description="PEM private key of tls_cert.")
    gateway_tls_client_ca: str | None = Field(
        None, description="PEM CA: clients must present a certificate it signed (mutual TLS)."
    )
    gateway_model_dirs: list[str] = Field(
        default_factory=list, description="Model folders served (default: the shipped one)."
    )
    gateway_max_message_bytes: int = Field(
        8 << 20, ge=1 << 16, description="Largest request message."
    )
    gateway_max_images: int = Field(512, ge=1, description="Images per Classify/Measure request.")
    gateway_max_image_pixels: int = Field(
        4_000_000, ge=1, description="Height x width of one image."
    )
    gateway_max_upload_bytes: int = Field(20 << 30, ge=1, description="Largest video upload.")
    gateway_max_streams_per_lab: int = Field(
        8, ge=1, description="Concurrent streaming calls per lab."
    )
    gateway_max_jobs_per_lab: int = Field(16, ge=1, description="Unfinished jobs per lab.")
    gateway_workers: int = Field(16, ge=1, description="Server threads (calls handled at once).")
    gateway_watch_interval_s: float = Field(0.5, gt=0, description="Job status poll of WatchJob.")
