#!/usr/bin/env bash
# Debian packages the deployment tests use, where this machine can install them (root + apt):
# SLURM and munge for tests/test_slurm.py, podman/buildah/debootstrap/runc for the container
# tests. Tests whose tools are missing skip with the reason, so a failure here is not fatal.
set -uo pipefail
packages=(slurm-wlm munge podman buildah debootstrap runc fuse-overlayfs uidmap)
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install_test_tools: not root or no apt-get; the SLURM and container tests will skip" >&2
    exit 0
fi
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } \
        >/tmp/install_test_tools.log 2>&1 \
        || echo "install_test_tools: apt-get failed (see /tmp/install_test_tools.log); those tests will skip" >&2
fi
exit 0
