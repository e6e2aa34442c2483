"""Command-line tools the tests need but the project's venv cannot hold, each in its own venv.

checkov pins networkx<2.7, which scikit-image (networkx>=3) refuses, so it lives in a tool
venv made once in ``~/.cache/plankline/tools/checkov-<version>`` (about 2 min on a fresh
machine). Collection starts that install in the background (:func:`start_checkov_install`),
so it overlaps the tests before the Helm chart's instead of adding to the suite.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHECKOV_VERSION = "3.3.30"

_CHECKOV: concurrent.futures.Future[str] | None = None


def checkov_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "plankline" / "tools" / f"checkov-{CHECKOV_VERSION}"


def install_checkov() -> str:
    """A checkov executable: $PLANKLINE_CHECKOV, one on PATH, or the tool venv (made now if
    missing). Raises ``RuntimeError`` (with the reason) when there is none to be had."""
    if os.environ.get("PLANKLINE_CHECKOV"):
        return os.environ["PLANKLINE_CHECKOV"]
    if found := shutil.which("checkov"):
        return found
    venv = checkov_venv()
    exe = venv / "bin" / "checkov"
    if exe.exists():
        return str(exe)
    if os.environ.get("PLANKLINE_NO_TOOL_INSTALL"):
        raise RuntimeError(f"checkov missing ({exe}); PLANKLINE_NO_TOOL_INSTALL forbids an install")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"cannot install checkov=={CHECKOV_VERSION}: {done.stderr[-500:]}")
    return str(exe)


def start_checkov_install() -> None:
    """Begin :func:`install_checkov` in the background (once)."""
    global _CHECKOV
    if _CHECKOV is None:
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkov-install")
        _CHECKOV = pool.submit(install_checkov)
        pool.shutdown(wait=False)


def checkov_executable() -> str:
    """The executable :func:`start_checkov_install` makes (starting it now if collection did
    not)."""
    start_checkov_install()
    assert _CHECKOV is not None
    return _CHECKOV.result()
