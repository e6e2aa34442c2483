"""The Triton venv: ``tritonserver`` from ``nvidia-pytriton==0.7.0`` needs numpy<2.

The project runs numpy 2, so Triton lives in a separate small venv
(:func:`ensure_triton_venv`, default ``.stack/triton-venv``) created once from
PyPI and cached. That venv's numpy 1.x and onnxruntime also serve the
Python-backend model stubs: with numpy 2 a model reports READY but answers empty
tensors. :func:`triton_backend_dir` makes the backend folder of SYMLINKS into
the wheel (copies lose their RPATH and the server hangs at "loading").
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

from plankline.stream.processes import ServerError

#: What the Triton venv holds; changing it rebuilds the cached venv.
TRITON_VENV_PACKAGES = ("numpy==1.26.4", "onnxruntime==1.23.2")
TRITON_VENV_NODEPS = ("nvidia-pytriton==0.7.0",)


def base_python() -> Path:
    """The base interpreter behind this venv (its libpython is what the stub links to)."""
    return Path(getattr(sys, "_base_executable", sys.executable))


def ensure_triton_venv(path: Path, *, python: Path | None = None) -> Path:
    """Create (once, cached) the numpy<2 venv holding ``tritonserver`` and the model runtime.

    Safe to call from several processes: a file lock serialises creation and
    a marker records the installed package set, so a changed pin rebuilds.
    Takes ~20 s from a warm pip cache, longer from PyPI.
    """
    path = Path(path).resolve()
    spec = " ".join((*TRITON_VENV_PACKAGES, "--no-deps", *TRITON_VENV_NODEPS))
    marker = path / ".plankline-complete"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == spec:
            return path
        shutil.rmtree(path, ignore_errors=True)
        interpreter = python or base_python()
        pip = [
            str(path / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
        ]
        steps = [
            [str(interpreter), "-m", "venv", str(path)],
            [*pip, *TRITON_VENV_PACKAGES],
            [*pip, "--no-deps", *TRITON_VENV_NODEPS],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ServerError(
                    f"creating the Triton venv {path} failed at "
                    f"{' '.join(step)}:\n{result.stderr[-3000:]}"
                )
        marker.write_text(spec)
    return path


def pytriton_root(venv: Path) -> Path:
    matches = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not matches:
        raise FileNotFoundError(f"{venv}: no pytriton/tritonserver (nvidia-pytriton missing)")
    return matches[0]


def triton_backend_dir(venv: Path, dest: Path) -> Path:
    """A backend folder ``dest/python/`` of SYMLINKS into the wheel (copies lose RPATH)."""
    root = pytriton_root(venv)
    python_dir = Path(dest) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    stub_version = root.parents[2].name.removeprefix("python")  # lib/python3.X: the venv's
    links = {
        "libtriton_python.so": root / "backends/python/libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": root
        / f"python_backend_stubs/{stub_version}"
        / "triton_python_backend_stub",
    }
    for link_name, target in links.items():
        if not target.exists():
            raise FileNotFoundError(f"{target}: missing from nvidia-pytriton")
        link = python_dir / link_name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return Path(dest)
