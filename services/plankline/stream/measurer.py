"""Measurer service: RoiBatch -> ``pipeline.measure_chunk`` -> MeasurementResult.

Rebuilds the segmenter's ROIs (crops + masks, same order) from S3 and measures
them with the function the batch CLI uses; writes the exact typed table
(``measurements.npz``), from which the collector writes the chunk's measurements CSV
(the message's ``measurements_key``: a CSV here too would be formatted and stored twice).

Run: ``python -m plankline.stream.runner plankline.stream.measurer:from_env``.
"""

from __future__ import annotations

from plankline.pipeline import measure_chunk
from plankline.stream import contracts
from plankline.stream._service import ServiceBase
from plankline.stream.jobs import (
    chunk_from_manifest,
    job_settings,
    rois_from_objects,
    table_to_bytes,
)
from plankline.stream.runner import Incoming, Outgoing


class Measurer(ServiceBase):
    """Handler of ``plankline.rois`` (consumer group ``measurer``)."""

    def process(self, message: Incoming, msg: contracts.RoiBatch) -> list[Outgoing]:  # type: ignore[override]
        ref = msg.chunk
        settings = job_settings(self.store, ref.job_id)
        chunk = chunk_from_manifest(self.store, ref)
        rois = rois_from_objects(
            self.store.get_bytes(msg.roi_archive_key), self.store.get_bytes(msg.positions_key)
        )
        table = measure_chunk(chunk, rois, settings)
        npz_key = contracts.chunk_key(ref.job_id, ref.video_id, ref.chunk_index, "measurements.npz")
        self.store.put_bytes(npz_key, table_to_bytes(table))
        return [
            Outgoing.of(
                contracts.TOPIC_MEASUREMENTS,
                contracts.MeasurementResult(
                    chunk=ref,
                    # the CSV the collector writes from the exact copy once the chunk is done
                    measurements_key=contracts.result_key(ref.job_id, "measurements", chunk.name),
                    roi_archive_key=msg.roi_archive_key,
                    n_rois=len(rois),
                    bucket=self.store.bucket,
                ),
            )
        ]


def from_env() -> Measurer:
    """Factory for the shared runner (settings from ``PLANKLINE_*``)."""
    return Measurer()
