#!/bin/sh
# docker/install.sh: install Plankline's services into one virtual environment.
#
# The one install recipe of every image: docker/Dockerfile runs it (a RUN with the build
# context bind-mounted on /src), and the Singularity/Apptainer .def files run it in %post,
# so Kubernetes and HPC run the same code.
#
# Usage:
#   docker/install.sh [--variant cpu|cuda] [--prefix DIR] [--python PYTHON] [SRC]
#
#   SRC        Plankline's source tree (the folder holding pyproject.toml, services/ and
#              docker/); default: the folder above this script.
#   --variant  cpu (default): onnxruntime. cuda: onnxruntime-gpu with the NVIDIA CUDA 12 and
#              cuDNN 9 runtime wheels; only the host's NVIDIA driver is needed at run time
#              (docker --gpus / podman --device nvidia.com/gpu / singularity --nv). As root it
#              also registers the wheels' library folders with ldconfig
#              (/etc/ld.so.conf.d/plankline-cuda.conf), so ONNX Runtime's CUDA provider finds them.
#   --prefix   where the virtual environment goes; default /opt/plankline (then
#              /opt/plankline/bin holds python, plankline and plankline-healthcheck).
#   --python   the interpreter the venv is made from; default python3. It must be CPython
#              3.11 (the constraints are resolved for it) with the venv module: Debian's
#              python3 + python3-venv (bookworm), or the python:3.11-slim image's.
#
# What it installs: the library's pinned dependencies and the `stream` extra from
# pyproject.toml, less the local-stack-only binaries (Tansu, SeaweedFS, grpcio-tools), with
# every transitive package pinned by docker/constraints-<variant>.txt; then Plankline itself
# (no dependencies, built with the pinned setuptools, no build isolation: nothing unpinned is
# downloaded) and docker/healthcheck.py as <prefix>/bin/plankline-healthcheck. It finishes by
# importing every service module, so a broken image fails at build time, not in a pod.
#
# Needs: network access to PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS pointing at a mirror or a
# wheel folder), POSIX sh. Installs no system packages and creates no user: a base OS gets
# python3 and python3-venv from its own package manager first; the Dockerfile adds the user.
# pip's cache is used when PIP_CACHE_DIR or the default ~/.cache/pip is writable (a build
# cache mount); set PIP_NO_CACHE_DIR=1 to leave none behind.
set -eu

variant=cpu
prefix=/opt/plankline
python=python3
src=
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) src=$1; shift ;;
    esac
done
if [ -z "$src" ]; then
    src=$(cd "$(dirname "$0")/.." && pwd)
fi
case "$variant" in
    cpu|cuda) ;;
    *) echo "install.sh: --variant must be cpu or cuda, got '$variant'" >&2; exit 2 ;;
esac
for needed in pyproject.toml README.md services docker/requirements.py "docker/constraints-$variant.txt"; do
    if [ ! -e "$src/$needed" ]; then
        echo "install.sh: $src/$needed is missing (SRC must be Plankline's source tree)" >&2
        exit 2
    fi
done
if ! "$python" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "install.sh: $python must be CPython 3.11 with the venv module (Debian: python3-venv)" >&2
    exit 2
fi

echo "install.sh: Plankline ($variant) into $prefix from $src"
"$python" -m venv "$prefix"
pip="$prefix/bin/python -m pip --disable-pip-version-check --no-input"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$src/docker/requirements.py" "$src/pyproject.toml" "$variant" >"$work/requirements.txt"
constraints="$src/docker/constraints-$variant.txt"
$pip install --only-binary=:all: -c "$constraints" -r "$work/requirements.txt" setuptools
# Plankline itself: its dependencies are all above, and its build backend is pinned. Built
# from a copy, so SRC may be read-only (a bind mount) and is never written to.
mkdir "$work/src"
cp -R "$src/pyproject.toml" "$src/README.md" "$src/services" "$work/src/"
$pip install --no-deps --no-build-isolation -c "$constraints" "$work/src"
$pip check

install -m 0755 "$src/docker/healthcheck.py" "$prefix/bin/plankline-healthcheck"
sed -i "1s|.*|#!$prefix/bin/python|" "$prefix/bin/plankline-healthcheck"

if [ "$variant" = cuda ] && [ "$(id -u)" = 0 ] && [ -d /etc/ld.so.conf.d ]; then
    "$prefix/bin/python" - >/etc/ld.so.conf.d/plankline-cuda.conf <<'EOF'
import pathlib, site
for root in site.getsitepackages():
    for lib in sorted(pathlib.Path(root).glob("nvidia/*/lib")):
        print(lib)
EOF
    ldconfig
fi

# Fail the build, not the pod: every entry point imports.
"$prefix/bin/python" -c "
import onnxruntime, plankline.cli, plankline.stream.gateway, plankline.stream.runner
import plankline.stream.classifier, plankline.stream.collector
import plankline.stream.measurer, plankline.stream.segmenter
print('install.sh: ok, onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())
"
