"""Generated protobuf modules of plankline.v1 (do not edit; see scripts/gen_protos.py)."""
