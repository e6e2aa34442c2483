"""Podman helpers of the container tests: build docker/Dockerfile's images on a Debian base.

No Docker engine runs here; podman (Debian's 4.3, runtime ``runc``: ``crun`` fails on these
hybrid cgroups) builds and runs the same OCI images. The base is not pulled from a
registry: ``debootstrap --variant=minbase bookworm`` with python3 + python3-venv, imported
with ``podman import``, passed as ``BASE_IMAGE``. pip inside the build reads an offline
wheel folder the host fills once (``pip download`` with the host's pip configuration, so
proxies and mirrors work) and mounts read-only, and the build runs with ``--network none``.

Caches, so only the first run pays: the base image stays in podman's storage (rebuilt only
when missing), the wheel folder in ``.stack/wheels/<variant>-<hash of the pins>/``, and
podman's layer cache makes the second and later targets (they share the venv layer) cost
seconds.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BASE_TAG = "localhost/plankline-test-base:bookworm-minbase"
TOOLS = ("podman", "debootstrap", "runc")
DEBIAN_MIRROR = os.environ.get("PLANKLINE_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# ulimits: podman's defaults ask for more than this sandbox grants; runc, not crun.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def _docker_requirements() -> ModuleType:
    """docker/requirements.py, loaded under its own name (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "plankline_docker_requirements", ROOT / "docker" / "requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements = _docker_requirements()


def image_tag(target: str) -> str:
    """The local tag a test build of ``target`` gets (the README's image name)."""
    return f"localhost/plankline-{target}:test"


def missing_tool() -> str | None:
    """Why the container tests cannot run here (a missing tool or not root), or None."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return (
                f"{tool} not installed (apt-get install podman buildah debootstrap runc "
                "fuse-overlayfs uidmap)"
            )
    if os.geteuid() != 0:
        return "the container tests build a debootstrap base and run podman as root"
    return None


class Podman:
    """``podman`` with this project's containers.conf; every call logged with its duration."""

    def __init__(self, state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        conf = state / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.timings: dict[str, float] = {}

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
            raise RuntimeError(f"podman {' '.join(args[:3])}... failed: {err[-3000:]}")
        return result

    def timed(self, what: str, *args: str, timeout: float = 600) -> str:
        began = time.monotonic()
        out = self(*args, timeout=timeout).stdout
        self.timings[what] = round(time.monotonic() - began, 1)
        print(f"container setup: {what} took {self.timings[what]} s", file=sys.stderr)
        return out

    def works(self) -> str | None:
        """None when podman can run a container here, else podman's own complaint."""
        result = self("info", "--format", "{{.Store.GraphDriverName}}", check=False, timeout=60)
        return None if result.returncode == 0 else f"podman info failed: {result.stderr[-500:]}"

    def image_exists(self, tag: str) -> bool:
        return self("image", "exists", tag, check=False, timeout=60).returncode == 0


def ensure_base_image(podman: Podman, work: Path) -> str:
    """``BASE_TAG``: Debian bookworm minbase + python3 + python3-venv (Debian packages only)."""
    if podman.image_exists(BASE_TAG):
        return BASE_TAG
    rootfs = work / "rootfs"
    began = time.monotonic()
    subprocess.run(
        [
            *("debootstrap", "--variant=minbase", "--include=python3,python3-venv"),
            *("bookworm", str(rootfs), DEBIAN_MIRROR),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    podman.timings["debootstrap"] = round(time.monotonic() - began, 1)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):  # .debs, indexes
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    began = time.monotonic()
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
    podman("import", "--change", 'CMD ["/bin/bash"]', "-", BASE_TAG, input=tar.stdout)
    podman.timings["import"] = round(time.monotonic() - began, 1)
    shutil.rmtree(rootfs)
    return BASE_TAG


def wheelhouse(variant: str = "cpu") -> Path:
    """A folder with every wheel the ``variant`` image installs, downloaded once per pin set."""
    wanted = requirements.image_requirements(ROOT / "pyproject.toml", variant)
    constraints = ROOT / "docker" / f"constraints-{variant}.txt"
    pins = json.dumps([wanted, constraints.read_text()]).encode()
    key = hashlib.sha256(pins).hexdigest()[:12]
    folder = ROOT / ".stack" / "wheels" / f"{variant}-{key}"
    if (folder / ".complete").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"),
            *("--dest", str(folder), "-c", str(constraints), *wanted, "setuptools"),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    (folder / ".complete").write_text("")
    return folder


def source_id() -> str:
    """A hash of what the build context holds (pyproject, README, services/, docker/):
    buildah's layer cache does not look inside bind mounts, so the build passes this."""
    digest = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for folder in ("services", "docker"):
        files += sorted(
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build(podman: Podman, target: str, base: str, wheels: Path, source: str) -> str:
    """Build ``target`` of docker/Dockerfile on ``base`` offline; returns its tag.

    ``source`` (:func:`source_id`, taken once per session) keys the venv layer: every
    target of a session shares it, even if the working tree changes meanwhile.
    """
    tag = image_tag(target)
    podman.timed(
        f"build {target}",
        *("build", "--format", "docker", "--network", "none", "--layers"),
        *("-f", str(DOCKERFILE), "--target", target, "-t", tag),
        *("--build-arg", f"BASE_IMAGE={base}"),
        *("--build-arg", "PIP_FIND_LINKS=/wheels", "--build-arg", "PIP_NO_INDEX=1"),
        *("--build-arg", f"PLANKLINE_SOURCE_ID={source}"),
        *("-v", f"{wheels}:/wheels:ro"),
        str(ROOT),
        timeout=1200,
    )
    return tag


def run_args(name: str, env: dict[str, str], image: str, *cmd: str) -> list[str]:
    """``podman run -d`` on the host network (the stack binds 127.0.0.1), healthcheck kept
    for ``podman healthcheck run`` but no systemd timer (none runs here)."""
    flags: list[str] = ["run", "-d", "--name", name, "--network", "host"]
    flags += ["--health-interval", "disable"]
    flags += ["--read-only", "--tmpfs", "/tmp:rw,mode=1777"]  # as the Helm chart runs them
    for key, value in env.items():
        flags += ["-e", f"{key}={value}"]
    return [*flags, image, *cmd]


def logs(podman: Podman, names: Sequence[str]) -> str:
    """The last lines of each container's log, for an assertion message."""
    parts = []
    for name in names:
        result = podman("logs", "--tail", "30", name, check=False, timeout=30)
        parts.append(f"--- {name}\n{result.stdout}{result.stderr}")
    return "\n".join(parts)


# The image preparation (debootstrap base, wheels, five builds: minutes, mostly downloads and
# unpacking) starts in a background thread as soon as collection knows container tests will
# run (conftest's hook), so it overlaps the rest of the suite; the container tests run last.
_PREPARATION: concurrent.futures.Future[dict[str, str]] | None = None
TARGETS = ("classifier", "segmenter", "measurer", "collector", "gateway")


def prepare_images(work: Path) -> dict[str, str]:
    """Base, wheels and every CPU target built; tag per target. A podman of its own (state in
    ``work``): the tests' podman shares the same image store."""
    podman = Podman(work / "podman")
    broken = podman.works()
    if broken:
        raise RuntimeError(broken)
    base = ensure_base_image(podman, work / "debootstrap")
    began = time.monotonic()
    wheels = wheelhouse("cpu")
    podman.timings["wheels"] = round(time.monotonic() - began, 1)
    source = source_id()
    tags = {target: build(podman, target, base, wheels, source) for target in TARGETS}
    print(f"container setup timings (s): {podman.timings}", file=sys.stderr)
    return tags


def start_preparation() -> None:
    """Begin :func:`prepare_images` in the background (once); no-op without the tools."""
    global _PREPARATION
    if _PREPARATION is None and missing_tool() is None:
        work = Path(tempfile.mkdtemp(prefix="plankline-containers-"))
        # podman's configuration for the session (the images live in podman's own store)
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="image-build")
        _PREPARATION = pool.submit(prepare_images, work)
        pool.shutdown(wait=False)


def prepared_images() -> dict[str, str]:
    """The tags :func:`start_preparation` builds (starting it now if collection did not)."""
    start_preparation()
    assert _PREPARATION is not None, "start_preparation needs the tools missing_tool() checks"
    return _PREPARATION.result()
