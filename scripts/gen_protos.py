"""Regenerate the committed protobuf modules from ``protos/`` (or check they are current).

The generated ``*_pb2.py``/``*_pb2.pyi`` are committed under
``services/plankline/stream/v1/`` so an install needs no code generation; this
script is the only way they change, and ``tests/test_stream_contracts.py``
fails when they drift from the ``.proto``.

Usage::

    python scripts/gen_protos.py          # rewrite services/plankline/stream/v1/
    python scripts/gen_protos.py --check  # exit 1 if they differ from the .proto
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PROTOS = ["plankline/v1/plankline.proto", "plankline/v1/api.proto"]
#: Protos that define gRPC services: their ``*_pb2_grpc.py`` stubs are generated too.
SERVICES = ["plankline/v1/api.proto"]
#: protoc names modules by the proto package path (``plankline.v1``); ours live in
#: ``plankline.stream.v1``, so the generated stubs' imports are pointed there.
IMPORT_FROM, IMPORT_TO = "from plankline.v1 import", "from plankline.stream.v1 import"
TARGET = ROOT / "services" / "plankline" / "stream" / "v1"


def generate(out_dir: Path) -> dict[str, str]:
    """Run grpcio-tools' protoc on PROTOS; return {file name: generated text}."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS}")
    grpc_args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--grpc_python_out={out_dir}"]
    if protoc.main([*grpc_args, *SERVICES]) != 0:
        raise RuntimeError(f"protoc (gRPC stubs) failed on {SERVICES}")
    files = {}
    for proto in PROTOS:
        stem = Path(proto).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi"):
            path = out_dir / f"{stem}{suffix}"
            files[path.name] = path.read_text()
    for proto in SERVICES:
        path = out_dir / f"{Path(proto).with_suffix('')}_pb2_grpc.py"
        files[path.name] = path.read_text().replace(IMPORT_FROM, IMPORT_TO)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only compare, write nothing.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    stale = [
        name
        for name, text in files.items()
        if not (TARGET / name).is_file() or (TARGET / name).read_text() != text
    ]
    if options.check:
        for name in stale:
            print(f"stale: {TARGET / name} (run python scripts/gen_protos.py)", file=sys.stderr)
        return 1 if stale else 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (TARGET / name).write_text(text)
    print(f"wrote {', '.join(sorted(files))} to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
