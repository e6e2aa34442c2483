"""The gRPC gateway (plankline.v1.Plankline) against real servers on 127.0.0.1.

Direct calls are checked against the library in this process (same probabilities,
same measurements); jobs go through a real Tansu broker, SeaweedFS and the four
services, and their downloaded results are compared with the batch CLI's files.
One gateway (and one stack) serves each group of tests.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from plankline.imaging.measure import measure_rois
from plankline.imaging.synth import make_roi_library, render_organism
from plankline.model.infer import (
    DEFAULT_MODEL_DIR,
    SYNTHETIC_MODEL_DIR,
    model_fingerprint,
    read_classification_csv,
    shared_classifier,
    thresholded_classes,
)
from plankline.stream.auth import new_token, token_digest
from plankline.stream.client import PlanklineClient
from plankline.stream.gateway import RunningGateway, serve
from plankline.stream.settings import GatewaySettings
from plankline.stream.v1 import api_pb2

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {
    "gateway_max_images": 64,
    "gateway_max_image_pixels": 1_000_000,
    "gateway_max_streams_per_lab": 2,
    "gateway_max_message_bytes": 1 << 20,
}
Code = grpc.StatusCode


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status a call ends with (OK, "") or its error's."""
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return Code.OK, ""


def detail_field(call: Any) -> str:
    """The field the error's google.rpc details name (BadRequest or QuotaFailure)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        call()
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        assert status is not None, "no rich error details"
        for item in status.details:
            for kind in (error_details_pb2.BadRequest, error_details_pb2.QuotaFailure):
                if item.Is(kind.DESCRIPTOR):
                    detail = kind()
                    item.Unpack(detail)
                    if isinstance(detail, error_details_pb2.BadRequest):
                        return detail.field_violations[0].field
                    return detail.violations[0].subject
        raise AssertionError(f"no field in the details of {status}") from None
    raise AssertionError("the call succeeded")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rois(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    """40 synthetic ROI PNGs, 8 per class: (class, encoded bytes)."""
    folder = tmp_path_factory.mktemp("rois")
    make_roi_library(folder, 8, seed=3)
    return [(p.parent.name, p.read_bytes()) for p in sorted(folder.rglob("*.png"))]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two labs' tokens; the gateway's file holds only their sha256."""
    folder = tmp_path_factory.mktemp("tokens")
    clear = {"lab-a": new_token(), "lab-b": new_token(), "lab-c": new_token()}
    path = folder / "tokens.json"
    path.write_text(json.dumps({lab: token_digest(t) for lab, t in clear.items()}))
    return {"clear": clear, "file": path}


@pytest.fixture(scope="module")
def direct(tokens: dict[str, Any]) -> Iterator[RunningGateway]:
    """A gateway for direct calls (no stack behind it: they need none)."""
    from plankline.stream.stack import free_port

    dead_store = {"s3_endpoint": f"127.0.0.1:{free_port()}", "s3_retries": 0}  # jobs: UNAVAILABLE
    running = serve(  # the generator's model: the direct tests classify generated ROIs
        GatewaySettings(
            gateway_port=0,
            gateway_tokens_file=str(tokens["file"]),
            gateway_model_dirs=[str(SYNTHETIC_MODEL_DIR)],
            **dead_store,
            **LIMITS,
        )
    )
    yield running
    running.stop()


def client(running: RunningGateway, token: str | None, **kw: Any) -> PlanklineClient:
    return PlanklineClient(f"127.0.0.1:{running.port}", token=token, retries=0, **kw)


@pytest.fixture(scope="module")
def lab_a(direct: RunningGateway, tokens: dict[str, Any]) -> Iterator[PlanklineClient]:
    with client(direct, tokens["clear"]["lab-a"]) as api:
        yield api


# ---------------------------------------------------------------------------- direct calls


def test_classify_over_grpc_gives_the_in_process_probabilities_and_classes(
    lab_a: PlanklineClient, rois: list[tuple[str, bytes]]
) -> None:
    answer = lab_a.classify(rois)
    clf = shared_classifier(SYNTHETIC_MODEL_DIR)
    crops = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for _, b in rois]
    want = clf.predict(crops)
    got = np.array([p.probabilities for p in answer.predictions], np.float32)
    np.testing.assert_array_equal(got, want)  # float32 over the wire, bit for bit
    assert list(answer.class_names) == clf.class_names
    assert [p.id for p in answer.predictions] == [c for c, _ in rois]
    assert [p.top_class for p in answer.predictions] == [clf.class_names[k] for k in want.argmax(1)]
    assert [p.thresholded_class for p in answer.predictions] == thresholded_classes(
        want, clf.class_names, clf.thresholds
    )
    assert answer.model_sha256 == model_fingerprint(SYNTHETIC_MODEL_DIR)
    accuracy = np.mean([p.top_class == p.id for p in answer.predictions])
    assert accuracy >= 0.9  # the shipped model on its own generator's ROIs


def test_classify_stream_answers_every_batch_in_order_with_the_unary_answers(
    lab_a: PlanklineClient, rois: list[tuple[str, bytes]]
) -> None:
    batches = [rois[i : i + 7] for i in range(0, len(rois), 7)]
    answers = list(lab_a.classify_stream(batches))
    assert [len(a.predictions) for a in answers] == [len(b) for b in batches]
    unary = lab_a.classify(rois)
    streamed = [p for a in answers for p in a.predictions]
    assert streamed == list(unary.predictions)


def test_measure_gives_measure_rois_columns_with_given_masks_and_found_ones(
    lab_a: PlanklineClient,
) -> None:
    rng = np.random.default_rng(5)
    organisms = [render_organism(kind, rng, 60) for kind in ("copepod", "protist", "larval_fish")]
    images = [cv2.imencode(".png", im)[1].tobytes() for im, _ in organisms]
    masks = [cv2.imencode(".png", m.astype(np.uint8) * 255)[1].tobytes() for _, m in organisms]
    got = lab_a.measure(images, masks, pixel_size_um=10.0)
    want = measure_rois([im for im, _ in organisms], [m for _, m in organisms], pixel_size_um=10.0)
    assert list(got) == list(want)
    for name, values in want.items():
        np.testing.assert_array_equal(np.array(got[name]), values, err_msg=name)
    found = lab_a.measure(images)  # no masks: the gateway finds each main object
    from plankline.imaging.segment import object_mask

    crops = [im for im, _ in organisms]
    np.testing.assert_array_equal(
        found["area"], measure_rois(crops, [object_mask(c) for c in crops])["area"]
    )
    areas = [m.sum() for _, m in organisms]  # Otsu's cut vs the truth's quarter contrast
    np.testing.assert_allclose(found["area"], areas, rtol=0.1)


def test_list_models_describes_the_served_model(lab_a: PlanklineClient) -> None:
    (model,) = lab_a.models()
    clf = shared_classifier(SYNTHETIC_MODEL_DIR)
    assert model.name == SYNTHETIC_MODEL_DIR.name and model.is_default
    assert model.sha256 == model_fingerprint(SYNTHETIC_MODEL_DIR)
    assert list(model.class_names) == clf.class_names
    assert (model.input_size, model.polarity) == (clf.canvas, clf.polarity)
    assert model.uses_measurements == clf.shapes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad=st.one_of(
        st.just(b""),
        st.binary(min_size=1, max_size=200),
        st.integers(8, 60).map(lambda n: b"\x89PNG\r\n\x1a\n" + b"\0" * n),
    ),
    where=st.integers(0, 5),
)
def test_a_corrupt_image_is_invalid_argument_naming_its_index_and_the_server_keeps_serving(
    lab_a: PlanklineClient, rois: list[tuple[str, bytes]], bad: bytes, where: int
) -> None:
    batch = [data for _, data in rois[:6]]
    batch[where] = bad
    code, details = status_of(lambda: lab_a.classify(batch))
    assert code == Code.INVALID_ARGUMENT and details.startswith(f"images[{where}]: "), details
    code, details = status_of(lambda: lab_a.measure(batch))
    assert code == Code.INVALID_ARGUMENT and details.startswith(f"images[{where}]: "), details
    assert len(lab_a.classify(rois[:2]).predictions) == 2  # still serving


def test_bad_request_fields_get_the_status_gRPC_intends_naming_the_field(
    lab_a: PlanklineClient, rois: list[tuple[str, bytes]]
) -> None:
    one = [rois[0][1]]
    assert status_of(lambda: lab_a.classify([]))[0] == Code.INVALID_ARGUMENT
    code, details = status_of(lambda: lab_a.classify(one, model="nope"))
    assert code == Code.NOT_FOUND and details.startswith("model: ")
    code, details = status_of(lambda: lab_a.measure(one, pixel_size_um=-1.0))
    assert code == Code.INVALID_ARGUMENT and details.startswith("pixel_size_um: ")
    small = cv2.imencode(".png", np.full((5, 5), 255, np.uint8))[1].tobytes()
    code, details = status_of(lambda: lab_a.measure(one, [small]))
    assert code == Code.INVALID_ARGUMENT and details.startswith("images[0].mask: 5x5 pixels")
    for job_id in ("", "../x", "a" * 300):
        code, details = status_of(lambda job_id=job_id: lab_a.job(job_id))
        assert code == Code.INVALID_ARGUMENT and details.startswith("job_id: "), details
    assert detail_field(lambda: lab_a.classify([one[0], b"junk"])) == "images[1]"
    assert detail_field(lambda: lab_a.classify(one * 65)) == "images"  # QuotaFailure


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.sampled_from([0, 1, 2, 64, 65]),
    model=st.one_of(st.just(""), st.just(SYNTHETIC_MODEL_DIR.name), st.text(max_size=12)),
    pixel_size=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 10.0, 1e6, 1e300])
    ),
    mask=st.sampled_from(["none", "same", "smaller", "corrupt"]),
)
def test_direct_calls_answer_the_status_their_fields_call_for(
    lab_a: PlanklineClient,
    rois: list[tuple[str, bytes]],
    n: int,
    model: str,
    pixel_size: float,
    mask: str,
) -> None:
    """Property with an oracle: image counts around the limits (0, 64), any model name, any
    float pixel size, masks of the right size, another size or corrupt get exactly the
    status (and the field) the API defines; the server answers the next call."""
    images = [rois[i % len(rois)][1] for i in range(n)]
    crop = cv2.imdecode(np.frombuffer(rois[0][1], np.uint8), cv2.IMREAD_UNCHANGED)
    shapes = {"same": crop.shape[:2], "smaller": (crop.shape[0] - 1, crop.shape[1])}
    masks = None
    if n and mask in shapes:
        masks = [cv2.imencode(".png", np.full(shapes[mask], 255, np.uint8))[1].tobytes()]
    elif n and mask == "corrupt":
        masks = [b"\x89PNG\r\n\x1a\n broken"]

    def want_images(code: Code = Code.OK, field: str = "") -> tuple[Code, str]:
        if n == 0:
            return Code.INVALID_ARGUMENT, "images: "
        if n > 64:
            return Code.RESOURCE_EXHAUSTED, "images: "
        return code, field

    if model and model != SYNTHETIC_MODEL_DIR.name:
        want = (Code.NOT_FOUND, "model: ")
    else:
        want = want_images()
    code, details = status_of(lambda: lab_a.classify(images, model=model))
    assert (code, details[: len(want[1])]) == want, details
    if not 0 <= pixel_size <= 1e6:  # NaN, infinities, negative, absurdly large
        want = (Code.INVALID_ARGUMENT, "pixel_size_um: ")
    elif masks is not None and mask != "same":
        want = want_images(Code.INVALID_ARGUMENT, "images[0].mask: ")
    else:
        want = want_images()
    code, details = status_of(lambda: lab_a.measure(images, masks, pixel_size_um=pixel_size))
    assert (code, details[: len(want[1])]) == want, details
    assert len(lab_a.classify(rois[:1]).predictions) == 1


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["Classify", "Measure", "GetJob", "ListModels", "ClassifyStream"]),
    body=st.one_of(st.binary(max_size=40), st.sampled_from([b"\xff\xff", b"\n\xff\xff\x0f"])),
)
def test_bytes_that_are_no_request_are_invalid_argument_never_internal(
    direct: RunningGateway, tokens: dict[str, Any], method: str, body: bytes
) -> None:
    """Wrong wire types and truncated fields: gRPC's own parsing would answer INTERNAL; the
    gateway parses itself and answers INVALID_ARGUMENT naming the request (or message)."""
    from google.protobuf.message import DecodeError

    request_type = {"GetJob": api_pb2.GetJobRequest, "ListModels": api_pb2.ListModelsRequest}
    request_type |= {"Measure": api_pb2.MeasureRequest}
    meta = (("authorization", f"Bearer {tokens['clear']['lab-a']}"),)
    with grpc.insecure_channel(f"127.0.0.1:{direct.port}") as channel:
        path = f"/plankline.v1.Plankline/{method}"
        if method == "ClassifyStream":
            stream = channel.stream_stream(path)
            code, details = status_of(lambda: stream(iter([body]), metadata=meta, timeout=10))
        else:
            unary = channel.unary_unary(path)
            code, details = status_of(lambda: unary(body, metadata=meta, timeout=10))
    try:
        request_type.get(method, api_pb2.ClassifyRequest).FromString(body)
    except DecodeError:
        field = "messages[0]" if method == "ClassifyStream" else "request"
        assert code == Code.INVALID_ARGUMENT and details.startswith(f"{field}: not a "), details
    else:  # a message (unknown fields aside): answered as that message
        assert code in {*CLIENT_ERRORS, Code.OK, Code.UNAVAILABLE}, (code, details)


@settings(max_examples=30, deadline=None)
@given(job_id=st.text(max_size=40), sha=st.text(max_size=70))
def test_any_job_id_or_hash_gets_a_client_status_never_internal(
    lab_a: PlanklineClient, job_id: str, sha: str
) -> None:
    code, details = status_of(lambda: lab_a.job(job_id))
    assert code in (Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.UNAVAILABLE), details
    request = api_pb2.GetUploadRequest(sha256=sha)
    code, details = status_of(lambda: lab_a.stub.GetUpload(request, metadata=lab_a.metadata))
    assert code in (Code.INVALID_ARGUMENT, Code.UNAVAILABLE, Code.OK), details


def test_limits_answer_resource_exhausted_before_any_work(
    lab_a: PlanklineClient, direct: RunningGateway, rois: list[tuple[str, bytes]]
) -> None:
    tiny = rois[0][1]
    code, details = status_of(lambda: lab_a.classify([tiny] * 65))
    assert code == Code.RESOURCE_EXHAUSTED and details == "images: 65 images, over the limit of 64"
    # 2000 x 1000 px of white compresses to ~2 kB: refused from the header, never decoded
    huge = cv2.imencode(".png", np.full((1000, 2000), 255, np.uint8))[1].tobytes()
    assert len(huge) < 20_000
    code, details = status_of(lambda: lab_a.classify([tiny, huge]))
    assert code == Code.RESOURCE_EXHAUSTED and details.startswith("images[1]: 2000x1000 pixels")
    bomb = _png_header_only(40_000, 40_000)  # 1.6 Gpx declared in 60 bytes
    code, details = status_of(lambda: lab_a.classify([bomb]))
    assert code == Code.RESOURCE_EXHAUSTED and details.startswith("images[0]: ")
    noise = np.random.default_rng(0).integers(0, 255, (900, 1100), np.uint8)  # 1 MB as PNG
    code, _ = status_of(lambda: lab_a.classify([cv2.imencode(".png", noise)[1].tobytes()] * 2))
    assert code == Code.RESOURCE_EXHAUSTED  # over gateway_max_message_bytes
    # concurrent streams per lab: 2 held open, the third is refused, another lab unaffected
    release = threading.Event()

    def held() -> Iterator[list[bytes]]:
        yield [tiny]
        release.wait(20)

    open_streams = [lab_a.classify_stream(held()) for _ in range(2)]
    for stream in open_streams:
        next(stream)  # both are running on the server now
    code, details = status_of(lambda: lab_a.classify_stream([[tiny]]))
    assert code == Code.RESOURCE_EXHAUSTED and "2 streaming calls open" in details
    release.set()
    for stream in open_streams:
        list(stream)
    assert len(list(lab_a.classify_stream([[tiny]]))) == 1  # slots freed
    # streams the client cancels free their slots too (no leak from cut connections)
    release.clear()
    cut = [lab_a.classify_stream(held()) for _ in range(2)]
    for stream in cut:
        next(stream)
        stream.cancel()
    deadline = time.monotonic() + 10
    while status_of(lambda: list(lab_a.classify_stream([[tiny]])))[0] != Code.OK:
        assert time.monotonic() < deadline, "cancelled streams kept their slots"
        time.sleep(0.05)
    release.set()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` gray pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_missing_wrong_and_revoked_tokens_are_unauthenticated(
    direct: RunningGateway, tokens: dict[str, Any], rois: list[tuple[str, bytes]]
) -> None:
    one = [rois[0][1]]
    for token in (None, "not-a-token", tokens["clear"]["lab-a"] + "x"):
        with client(direct, token) as api:
            code, details = status_of(lambda api=api: api.classify(one))
            assert code == Code.UNAUTHENTICATED and details.startswith("authorization: ")
    with client(direct, tokens["clear"]["lab-c"]) as api:
        assert len(api.classify(one).predictions) == 1
        table = json.loads(tokens["file"].read_text())
        del table["lab-c"]  # revoke: the gateway re-reads its file when it changes
        tokens["file"].write_text(json.dumps(table, indent=2))
        code, details = status_of(lambda: api.classify(one))
        assert (code, details) == (Code.UNAUTHENTICATED, "authorization: unknown or revoked token")


def test_no_tokens_refuses_to_start_unless_unauthenticated_is_switched_on(
    rois: list[tuple[str, bytes]],
) -> None:
    with pytest.raises(ValueError, match="no tokens"):
        serve(GatewaySettings(gateway_port=0))
    running = serve(GatewaySettings(gateway_port=0, gateway_allow_unauthenticated=True))
    try:
        with client(running, None) as api:
            assert len(api.classify([rois[0][1]]).predictions) == 1
    finally:
        running.stop()


def test_a_store_outage_is_unavailable_and_the_client_retries_until_the_gateway_is_up(
    lab_a: PlanklineClient, rois: list[tuple[str, bytes]]
) -> None:
    from plankline.stream.stack import free_port

    code, details = status_of(lambda: lab_a.job("cruise42"))  # its object store is down
    assert code == Code.UNAVAILABLE and details.startswith("object store or broker unavailable")
    port = free_port()
    later = threading.Timer(
        0.5,
        lambda: started.append(
            serve(GatewaySettings(gateway_port=port, gateway_allow_unauthenticated=True))
        ),
    )
    started: list[RunningGateway] = []
    later.start()
    try:
        with PlanklineClient(f"127.0.0.1:{port}", retries=8, backoff_s=0.1) as api:
            assert len(api.classify([rois[0][1]]).predictions) == 1  # after UNAVAILABLEs
        assert started  # it was answered by the gateway started late
    finally:
        later.join()
        for running in started:
            running.stop()


def test_health_and_reflection_answer_without_a_token(direct: RunningGateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{direct.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "plankline.v1.Plankline"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = stub.ServerReflectionInfo(iter([request]), timeout=5)
        names = {s.name for s in reply.list_services_response.service}
        assert {"plankline.v1.Plankline", "grpc.health.v1.Health"} <= names


# ---------------------------------------------------------------------------- TLS


def _certificates(folder: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1/localhost, a client certificate."""
    x509 = pytest.importorskip("cryptography.x509", reason="cryptography not installed")
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool, alt: Any) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if alt is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def save(label: str, cert: Any, key: Any | None) -> None:
        files[f"{label}_cert"] = folder / f"{label}.pem"
        files[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            files[f"{label}_key"] = folder / f"{label}.key"
            files[f"{label}_key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("plankline test CA", ca_key, name("plankline test CA"), ca_key, True, None)
    save("ca", ca, None)
    alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for label in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        save(label, issue(f"plankline {label}", key, ca.subject, ca_key, False, alt), key)
    other_key = ec.generate_private_key(ec.SECP256R1())  # a client cert from another CA
    other = issue("stranger", other_key, name("stranger"), other_key, True, None)
    save("stranger", other, other_key)
    return files


def test_tls_and_mutual_tls_with_a_test_ca(
    tmp_path: Path, tokens: dict[str, Any], rois: list[tuple[str, bytes]]
) -> None:
    pem = _certificates(tmp_path)
    token, one = tokens["clear"]["lab-a"], [rois[0][1]]
    base = {"gateway_port": 0, "gateway_tokens_file": str(tokens["file"])}
    tls = serve(
        GatewaySettings(
            **base,
            gateway_tls_cert=str(pem["server_cert"]),
            gateway_tls_key=str(pem["server_key"]),
        )
    )
    try:
        with client(tls, token, ca=pem["ca_cert"]) as api:
            assert len(api.classify(one).predictions) == 1
        with client(tls, token) as plain:  # plaintext to a TLS port: no connection
            assert status_of(lambda: plain.classify(one))[0] == Code.UNAVAILABLE
    finally:
        tls.stop()
    mtls = serve(
        GatewaySettings(
            **base,
            gateway_tls_cert=str(pem["server_cert"]),
            gateway_tls_key=str(pem["server_key"]),
            gateway_tls_client_ca=str(pem["ca_cert"]),
        )
    )
    try:
        lab = {"ca": pem["ca_cert"], "cert": pem["client_cert"], "key": pem["client_key"]}
        with client(mtls, token, **lab) as api:
            assert len(api.classify(one).predictions) == 1
        with client(mtls, token, ca=pem["ca_cert"]) as anonymous:  # no client certificate
            assert status_of(lambda: anonymous.classify(one))[0] == Code.UNAVAILABLE
        stranger = {"ca": pem["ca_cert"], "cert": pem["stranger_cert"], "key": pem["stranger_key"]}
        with client(mtls, token, **stranger) as api:
            assert status_of(lambda: api.classify(one))[0] == Code.UNAVAILABLE
    finally:
        mtls.stop()


# ---------------------------------------------------------------------------- jobs (real stack)

SMALL = {"height": 256, "width": 384, "density": 12.0, "size_range": (8.0, 90.0)}
VIDEO = "20260101120000.000.avi"
JOB_SETTINGS = {"chunk_frames": "4", "fps": "10"}
SERVICES = {
    "segmenter": ("plankline.stream.segmenter", "Segmenter", ["TOPIC_CHUNKS"]),
    "measurer": ("plankline.stream.measurer", "Measurer", ["TOPIC_ROIS"]),
    "classifier": ("plankline.stream.classifier", "ClassifierService", ["TOPIC_ROIS"]),
    "collector": (
        "plankline.stream.collector",
        "Collector",
        ["TOPIC_MEASUREMENTS", "TOPIC_CLASSIFICATIONS"],
    ),
}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from plankline.imaging.synth import write_synth_video

    folder = tmp_path_factory.mktemp("video")
    write_synth_video(folder / VIDEO, 10, seed=21, fps=10.0, **SMALL)
    return folder / VIDEO


@pytest.fixture(scope="module")
def batch_project(video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same video through `plankline run`'s pipeline, same settings."""
    from plankline.batch.run import run_batch
    from plankline.config import BatchSettings

    project = tmp_path_factory.mktemp("batch")
    (project / "raw").mkdir()
    (project / "raw" / VIDEO).symlink_to(video)
    report = run_batch(BatchSettings(project=project, chunk_frames=4, workers=1, fps=10.0))
    assert report.failures == []
    return project


@pytest.fixture(scope="module")
def stack(s3_server: Any, stack_dir: Path) -> Iterator[dict[str, Any]]:
    """A fresh Tansu, a fresh bucket on the session's SeaweedFS, the four services in
    threads (ONNX Runtime classifier), and a gateway in front of them."""
    import importlib

    from plankline.stream import contracts
    from plankline.stream import stack as servers
    from plankline.stream.runner import Runner, ensure_topics
    from plankline.stream.settings import ServiceSettings
    from plankline.stream.store import S3Store

    try:
        servers.tansu_binary()
    except FileNotFoundError as error:
        pytest.skip(f"Tansu binary missing: {error}")
    kafka = servers.start_tansu(stack_dir, name=f"tansu-gw-{uuid.uuid4().hex[:6]}")
    ensure_topics(kafka.endpoint, {t: 2 for t in contracts.TOPICS})
    s3 = {
        "s3_endpoint": s3_server.endpoint,
        "s3_access_key": s3_server.extra["access_key"],
        "s3_secret_key": s3_server.extra["secret_key"],
        "s3_bucket": f"gateway-{uuid.uuid4().hex[:6]}",
    }
    store = S3Store.from_settings(ServiceSettings(**s3))
    store.ensure_bucket()
    runners, threads = [], []
    for name, (module, handler, topics) in SERVICES.items():
        settings = ServiceSettings(
            **s3,
            service_name=name,
            group_id=name,
            input_topics=[getattr(contracts, t) for t in topics],
            bootstrap_servers=kafka.endpoint,
            session_timeout_ms=6000,
            backoff_initial_s=0.05,
            max_attempts=2,
            http_port=0,
            poll_timeout_ms=100,
        )
        service = getattr(importlib.import_module(module), handler)(settings)
        runner = Runner(service, settings)
        thread = threading.Thread(target=runner.run, name=f"gw-{name}", daemon=True)
        thread.start()
        runners.append(runner)
        threads.append(thread)
    yield {"kafka": kafka, "s3": s3, "store": store}
    for runner in runners:
        runner.request_stop()
    for thread in threads:
        thread.join(timeout=30)
    kafka.stop()


@pytest.fixture(scope="module")
def jobs_gateway(stack: dict[str, Any], tokens: dict[str, Any]) -> Iterator[RunningGateway]:
    running = serve(
        GatewaySettings(
            **stack["s3"],
            bootstrap_servers=stack["kafka"].endpoint,
            gateway_port=0,
            gateway_tokens_file=str(tokens["file"]),
            gateway_watch_interval_s=0.2,
            **LIMITS,
        ),
        store=stack["store"],
    )
    running.gateway.upload_part_bytes = 64 << 10  # so a cut upload keeps its parts
    yield running
    running.stop()


def _tar(path: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _zip(path: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_a_video_uploaded_through_the_gateway_gives_the_batch_cli_results(
    jobs_gateway: RunningGateway,
    tokens: dict[str, Any],
    video: Path,
    batch_project: Path,
    tmp_path: Path,
) -> None:
    with client(jobs_gateway, tokens["clear"]["lab-a"]) as api:
        job = api.submit_video(video, job="upload", settings=JOB_SETTINGS)
        assert job.uploaded_bytes == video.stat().st_size and job.chunks_planned == 3
        events = [e.job for e in api.watch("upload", timeout_s=120)]
        assert events[-1].state == api_pb2.Job.SUCCEEDED
        done = [e.chunks_done for e in events]
        assert done == sorted(done) and done[-1] == 3  # progress only goes forward
        again = api.submit_video(video, job="upload", settings=JOB_SETTINGS)
        assert again.uploaded_bytes == 0  # the store has the whole file: nothing sent
        listed = {f.path for f in api.results("upload")}
        files = api.download_results("upload", tmp_path / "out")
        assert {str(p.relative_to(tmp_path / "out")) for p in files} == listed
        counts = api.counts("upload")
    out = tmp_path / "out"
    names = sorted(p.name for p in (batch_project / "measurements").glob("*.csv"))
    assert len(names) == 3 and names == sorted(p.name for p in (out / "measurements").glob("*.csv"))
    tally: Counter[str] = Counter()
    for name in names:
        stem = name.removesuffix(".csv")
        assert _tar(out / "segmentation" / f"{stem}.tar") == _tar(
            batch_project / "segmentation" / f"{stem}.tar"
        )
        assert (out / "measurements" / name).read_bytes() == (
            batch_project / "measurements" / name
        ).read_bytes()
        ids_a, probs_a, classes_a = read_classification_csv(out / "classification" / name)
        ids_b, probs_b, classes_b = read_classification_csv(batch_project / "classification" / name)
        assert ids_a == ids_b and classes_a == classes_b
        np.testing.assert_allclose(probs_a, probs_b, rtol=0, atol=1e-7)
        assert _zip(out / "ecotaxa" / f"{stem}.zip") == _zip(
            batch_project / "ecotaxa" / f"{stem}.zip"
        )
        tally.update(classes_b[k] for k in probs_b.argmax(1))
    assert counts == dict(tally) and sum(tally.values()) == events[-1].rois > 10
    assert (out / "summary" / "counts_per_second.csv").read_bytes() == (
        batch_project / "summary" / "counts_per_second.csv"
    ).read_bytes()


def test_a_cut_upload_resumes_from_what_the_store_holds(
    jobs_gateway: RunningGateway, tokens: dict[str, Any], video: Path, tmp_path: Path
) -> None:
    from plankline.stream.client import file_sha256

    copy = tmp_path / "20260101120100.000.avi"  # other name, other bytes: a new upload
    data = bytearray(video.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(data)
    sha, size, piece = file_sha256(copy), len(data), 64 << 10
    header = api_pb2.VideoHeader(
        job_id="resumed", video_name=copy.name, sha256=sha, size=size, settings=JOB_SETTINGS
    )
    request = api_pb2.GetUploadRequest(sha256=sha, video_name=copy.name)

    with client(jobs_gateway, tokens["clear"]["lab-b"]) as api:

        def cut() -> Iterator[api_pb2.SubmitVideoRequest]:
            """Three pieces, wait until the gateway has stored them, then the network dies."""
            yield api_pb2.SubmitVideoRequest(header=header)
            for start in range(0, 3 * piece, piece):
                yield api_pb2.SubmitVideoRequest(data=bytes(data[start : start + piece]))
            deadline = time.monotonic() + 20
            while api.stub.GetUpload(request, metadata=api.metadata).bytes_stored < 3 * piece:
                assert time.monotonic() < deadline, "the pieces sent were not stored"
                time.sleep(0.05)
            raise ConnectionError("network cut mid-upload")

        code, _ = status_of(lambda: api.stub.SubmitVideo(cut(), metadata=api.metadata))
        assert code in (Code.CANCELLED, Code.UNKNOWN)
        stored = api.stub.GetUpload(request, metadata=api.metadata).bytes_stored
        assert stored == 3 * piece
        bad = api_pb2.VideoHeader(**{**_fields(header), "offset": 0})
        code, details = status_of(
            lambda: api.stub.SubmitVideo(
                iter([api_pb2.SubmitVideoRequest(header=bad)]), metadata=api.metadata
            )
        )
        assert code == Code.FAILED_PRECONDITION and details.startswith("header.offset: 0")
        job = api.submit_video(copy, job="resumed", settings=JOB_SETTINGS)
        assert job.uploaded_bytes == size - stored  # only the rest travelled
        final = [e.job for e in api.watch("resumed", timeout_s=120)][-1]
        assert final.state == api_pb2.Job.SUCCEEDED and final.chunks_done == 3


def _fields(message: Any) -> dict[str, Any]:
    return {f.name: v for f, v in message.ListFields()}


def test_a_lab_sees_and_cancels_only_its_own_jobs(
    jobs_gateway: RunningGateway, tokens: dict[str, Any], video: Path
) -> None:
    a = client(jobs_gateway, tokens["clear"]["lab-a"])
    b = client(jobs_gateway, tokens["clear"]["lab-b"])
    with a, b:
        key = "incoming/" + VIDEO  # a video already in the gateway's store
        store = jobs_gateway.gateway.store
        store.put_file(key, video)
        job = a.submit_reference(key, job="mine", settings=JOB_SETTINGS)
        assert job.lab == "lab-a" and job.chunks_planned == 3
        for call in (
            lambda: b.job("mine"),
            lambda: b.cancel("mine"),
            lambda: b.results("mine"),
            lambda: b.counts("mine"),
            lambda: b.watch("mine", timeout_s=5),
            lambda: b.download_results("mine", Path("/nonexistent")),
            lambda: b.submit_reference(key, job="mine", settings=JOB_SETTINGS),
        ):
            code, details = status_of(call)
            assert code == Code.PERMISSION_DENIED and details.startswith("job_id: "), details
        assert "mine" not in {j.job_id for j in b.jobs()}
        assert "mine" in {j.job_id for j in a.jobs()}
        code, details = status_of(lambda: b.job("nobody-has-this"))
        assert code == Code.NOT_FOUND and details == "job_id: no job 'nobody-has-this'"
        code, details = status_of(lambda: a.submit_reference("incoming/none.avi", job="x"))
        assert code == Code.NOT_FOUND and details.startswith("key: ")
        code, details = status_of(
            lambda: a.submit_reference(key, job="mine", settings={"fps": "x"})
        )
        assert code == Code.INVALID_ARGUMENT and details.startswith("settings['fps']")
        code, details = status_of(
            lambda: a.submit_reference(key, job="other", settings={"model": "/etc"})
        )
        assert code == Code.INVALID_ARGUMENT and details.startswith("settings['model']: '/etc'")
        code, details = status_of(lambda: a.submit_reference(key, job="x", settings={"nope": "1"}))
        assert code == Code.INVALID_ARGUMENT and details.startswith("settings['nope']")
        assert a.cancel("mine").state == api_pb2.Job.CANCELLED
        from plankline.stream import contracts

        assert store.exists(contracts.cancel_key("mine"))  # what every service checks
        (event,) = list(a.watch("mine", timeout_s=10))  # settled: one event, then the end
        assert event.job.state == api_pb2.Job.CANCELLED
        code, details = status_of(lambda: a.submit_reference(key, job="mine"))
        assert code == Code.FAILED_PRECONDITION and "cancelled" in details


def test_a_watch_past_its_deadline_ends_deadline_exceeded(
    jobs_gateway: RunningGateway, tokens: dict[str, Any], video: Path
) -> None:
    with client(jobs_gateway, tokens["clear"]["lab-a"]) as a:
        store = jobs_gateway.gateway.store
        store.put_file("incoming/slow/" + VIDEO, video)
        a.submit_reference("incoming/slow/" + VIDEO, job="deadline", settings=JOB_SETTINGS)
        code, _ = status_of(lambda: a.watch("deadline", timeout_s=0.3))
        assert code == Code.DEADLINE_EXCEEDED
        assert a.job("deadline").job_id == "deadline"  # still served


CLIENT_ERRORS = {
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.PERMISSION_DENIED,
    Code.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED,
}
SETTING_NAMES = ["chunk_frames", "fps", "model", "method", "min_area_px", "project", "nope", ""]
job_ids = st.one_of(
    st.text(max_size=30), st.sampled_from(["mine", "upload", "x" * 201, "../up", "ok-job.1"])
)
settings_maps = st.dictionaries(
    st.sampled_from(SETTING_NAMES),
    st.one_of(st.text(max_size=12), st.sampled_from(["4", "-1", "0", "1e400", "nan", "/etc"])),
    max_size=3,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    call=st.sampled_from(["reference", "upload", "job", "watch", "cancel", "download"]),
    job_id=job_ids,
    key=st.one_of(st.text(max_size=40), st.sampled_from(["", "a/", "jobs/x", "gateway/owners/x"])),
    name=st.one_of(st.text(max_size=20), st.just("20260101120000.000.avi")),
    sha=st.one_of(st.text(max_size=70), st.just("0" * 64), st.just("own")),
    size=st.sampled_from([0, 1, 5, 1 << 40]),
    data=st.lists(st.binary(max_size=64), max_size=3),
    settings_map=settings_maps,
    paths=st.lists(st.text(max_size=20), max_size=2),
)
@example(  # a whole upload with its right hash that is no video: refused, no job left
    call="upload",
    job_id="ok-job.1",
    key="",
    name="20260101120000.000.avi",
    sha="own",
    size=0,
    data=[b"not a video"],
    settings_map={},
    paths=[],
)
def test_any_job_request_gets_a_client_status_and_the_gateway_keeps_serving(
    jobs_gateway: RunningGateway,
    tokens: dict[str, Any],
    rois: list[tuple[str, bytes]],
    call: str,
    job_id: str,
    key: str,
    name: str,
    sha: str,
    size: int,
    data: list[bytes],
    settings_map: dict[str, str],
    paths: list[str],
) -> None:
    """Property: whatever the fields (empty, huge, malformed ids and names, bad settings,
    another lab's job, non-video bytes with their right hash), a job call ends OK or with
    the client status gRPC intends, naming the field; never INTERNAL; and no job is left
    claimed without a video."""
    import hashlib

    with client(jobs_gateway, tokens["clear"]["lab-b"]) as api:
        stub, meta = api.stub, api.metadata
        if call == "reference":
            request = api_pb2.SubmitReferenceRequest(job_id=job_id, key=key, settings=settings_map)
            code, details = status_of(lambda: stub.SubmitReference(request, metadata=meta))
        elif call == "upload":
            blob = b"".join(data)
            digest = hashlib.sha256(blob).hexdigest() if sha == "own" else sha
            header = api_pb2.VideoHeader(
                job_id=job_id,
                video_name=name,
                sha256=digest,
                size=len(blob) if sha == "own" else size,
                settings=settings_map,
            )
            parts = [api_pb2.SubmitVideoRequest(header=header)]
            parts += [api_pb2.SubmitVideoRequest(data=d) for d in data]
            code, details = status_of(lambda: stub.SubmitVideo(iter(parts), metadata=meta))
        elif call == "job":
            code, details = status_of(lambda: api.job(job_id))
        elif call == "watch":
            code, details = status_of(lambda: api.watch(job_id, timeout_s=2))
        elif call == "cancel":
            code, details = status_of(lambda: api.cancel(job_id))
        else:
            request = api_pb2.DownloadResultsRequest(job_id=job_id, paths=paths)
            code, details = status_of(lambda: stub.DownloadResults(request, metadata=meta))
        assert code in CLIENT_ERRORS, (code, details)  # nothing here may succeed
        assert re.match(r"^[a-z_]+(\[[^\]]*\])?(\.[a-z_]+)?(\[[^\]]*\])?: ", details), details
        stuck = [j.job_id for j in api.jobs() if j.chunks_planned == 0]
        assert stuck == [], f"jobs claimed without a video: {stuck}"
        assert len(api.classify([rois[0][1]]).predictions) == 1  # still serving


# ---------------------------------------------------------------------------- Node.js

NODE_CLIENT = ROOT / "tests" / "node_client"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """tests/node_client with its npm packages installed (once; node_modules is git-ignored)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: the Node.js client cannot be run")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_CLIENT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci failed (no registry?): {done.stderr.strip()[-300:]}")
    return NODE_CLIENT / "client.js"


def run_node(
    script: Path, running: RunningGateway, token: str, *args: str, ca: Path | None = None
) -> Any:
    env = {"PATH": os.environ["PATH"], "PLANKLINE_TOKEN": token}
    env["PLANKLINE_ENDPOINT"] = f"127.0.0.1:{running.port}"
    if ca is not None:
        env["PLANKLINE_CA"] = str(ca)
    done = subprocess.run(
        ["node", str(script), *args], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


def test_a_node_client_classifies_and_watches_a_job_over_the_same_contract(
    node_client: Path,
    jobs_gateway: RunningGateway,
    tokens: dict[str, Any],
    rois: list[tuple[str, bytes]],
    video: Path,
    tmp_path: Path,
) -> None:
    token = tokens["clear"]["lab-a"]
    files = []
    for i, (_, data) in enumerate(rois[:10]):
        files.append(tmp_path / f"roi{i:02d}.png")
        files[-1].write_bytes(data)
    answer = run_node(node_client, jobs_gateway, token, "classify", *map(str, files))
    with client(jobs_gateway, token) as api:
        want = api.classify([(f.name, f.read_bytes()) for f in files])
        api.submit_video(video, job="node", settings=JOB_SETTINGS)
    assert [p["id"] for p in answer["predictions"]] == [f.name for f in files]
    assert [p["top_class"] for p in answer["predictions"]] == [
        p.top_class for p in want.predictions
    ]
    np.testing.assert_allclose(
        [p["probabilities"] for p in answer["predictions"]],
        [list(p.probabilities) for p in want.predictions],
        rtol=1e-6,
    )
    (model,) = run_node(node_client, jobs_gateway, token, "models")["models"]
    assert model["sha256"] == model_fingerprint(DEFAULT_MODEL_DIR) and model["input_size"] == 64
    events = run_node(node_client, jobs_gateway, token, "watch", "node")["events"]
    assert events[-1]["job"]["state"] == "SUCCEEDED" and events[-1]["job"]["chunks_done"] == 3
    assert run_node(node_client, jobs_gateway, "wrong", "models")["code"] == "UNAUTHENTICATED"
    denied = run_node(node_client, jobs_gateway, tokens["clear"]["lab-b"], "watch", "node")
    assert denied["code"] == "PERMISSION_DENIED"


# ---------------------------------------------------------------------------- CLI, load


def test_plankline_remote_submits_watches_and_downloads_the_batch_cli_files(
    jobs_gateway: RunningGateway,
    tokens: dict[str, Any],
    video: Path,
    batch_project: Path,
    rois: list[tuple[str, bytes]],
    tmp_path: Path,
) -> None:
    from plankline.cli import app
    from typer.testing import CliRunner

    env = {
        "PLANKLINE_ENDPOINT": f"127.0.0.1:{jobs_gateway.port}",
        "PLANKLINE_TOKEN": tokens["clear"]["lab-b"],
        "COLUMNS": "200",
    }
    cli = CliRunner()
    models = cli.invoke(app, ["remote", "models"], env=env)
    default = f"{DEFAULT_MODEL_DIR.name} (default)"
    assert models.exit_code == 0 and default in models.output, models.output
    image = tmp_path / "roi.png"
    image.write_bytes(rois[0][1])
    classified = cli.invoke(app, ["remote", "classify", str(image)], env=env)
    assert classified.exit_code == 0, classified.output
    row = classified.output.splitlines()[1].split(",")  # image,top_class,probability,thresholded
    assert row[0] == "roi.png" and row[1] in shared_classifier(DEFAULT_MODEL_DIR).class_names
    job = ["--job", "cli"]
    sent = cli.invoke(
        app,
        ["remote", "submit", str(video), *job, "--chunk-frames", "4", "--set", "fps=10"],
        env=env,
    )
    assert sent.exit_code == 0 and "3 chunks planned" in sent.output, sent.output
    watched = cli.invoke(app, ["remote", "watch", *job], env=env)
    assert watched.exit_code == 0 and "SUCCEEDED, 3/3 chunks done" in watched.output
    got = cli.invoke(app, ["remote", "results", str(tmp_path / "out"), *job], env=env)
    assert got.exit_code == 0, got.output
    for csv in (batch_project / "measurements").glob("*.csv"):
        assert (tmp_path / "out" / "measurements" / csv.name).read_bytes() == csv.read_bytes()
    other_lab = env | {"PLANKLINE_TOKEN": tokens["clear"]["lab-a"]}
    denied = cli.invoke(app, ["remote", "watch", *job], env=other_lab)
    assert denied.exit_code == 2 and "PERMISSION_DENIED: job_id: " in denied.output


def test_unfinished_jobs_per_lab_are_limited(
    stack: dict[str, Any], tokens: dict[str, Any], video: Path
) -> None:
    running = serve(
        GatewaySettings(
            **stack["s3"],
            bootstrap_servers=stack["kafka"].endpoint,
            gateway_port=0,
            gateway_tokens_file=str(tokens["file"]),
            gateway_max_jobs_per_lab=1,
        ),
        store=stack["store"],
    )
    try:
        with client(running, tokens["clear"]["lab-b"]) as api:
            key = "incoming/limit/" + VIDEO
            running.gateway.store.put_file(key, video)
            unfinished = [j for j in api.jobs() if j.state == api_pb2.Job.RUNNING]
            for i in range(1 - len(unfinished)):
                api.submit_reference(key, job=f"limit-{i}", settings=JOB_SETTINGS)
            code, details = status_of(
                lambda: api.submit_reference(key, job="limit-over", settings=JOB_SETTINGS)
            )
            assert code == Code.RESOURCE_EXHAUSTED and "the limit is 1" in details
    finally:
        running.stop()


def test_concurrent_clients_classifying_get_no_errors_and_the_same_answers(
    direct: RunningGateway, tokens: dict[str, Any], rois: list[tuple[str, bytes]]
) -> None:
    """4 clients x 4 s of Classify calls (a bounded load; scripts/bench_gateway.py runs 30 s)."""
    want = [
        list(p.probabilities)
        for p in client(direct, tokens["clear"]["lab-a"]).classify(rois[:16]).predictions
    ]
    errors: list[str] = []
    calls = Counter[int]()

    def hammer(worker: int) -> None:
        with client(direct, tokens["clear"]["lab-a"]) as api:
            stop = time.monotonic() + 4.0
            while time.monotonic() < stop:
                try:
                    got = api.classify(rois[:16]).predictions
                except grpc.RpcError as error:
                    errors.append(f"{error.code()}: {error.details()}")
                    continue
                if [list(p.probabilities) for p in got] != want:
                    errors.append("different probabilities")
                calls[worker] += 1

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(calls) == 4 and min(calls.values()) > 0


def test_a_node_client_classifies_over_tls_trusting_the_labs_ca(
    node_client: Path, tokens: dict[str, Any], rois: list[tuple[str, bytes]], tmp_path: Path
) -> None:
    pem = _certificates(tmp_path)
    running = serve(
        GatewaySettings(
            gateway_port=0,
            gateway_tokens_file=str(tokens["file"]),
            gateway_tls_cert=str(pem["server_cert"]),
            gateway_tls_key=str(pem["server_key"]),
            gateway_model_dirs=[str(SYNTHETIC_MODEL_DIR)],  # the ROI is the generator's
        )
    )
    try:
        image = tmp_path / "roi.png"
        image.write_bytes(rois[0][1])
        token = tokens["clear"]["lab-a"]
        answer = run_node(node_client, running, token, "classify", str(image), ca=pem["ca_cert"])
        assert answer["predictions"][0]["top_class"] == rois[0][0]
        untrusted = run_node(
            node_client, running, token, "classify", str(image), ca=pem["stranger_cert"]
        )
        assert untrusted["code"] == "UNAVAILABLE"  # a server its CA did not sign
    finally:
        running.stop()
