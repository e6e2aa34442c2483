"""Classify throughput and latency over gRPC beside in-process classification, same run.

Starts a gateway on 127.0.0.1 (a random token), then for ``--seconds`` each:

1. in-process: ``Classifier.predict`` on decoded batches (the baseline; decoding
   included, as the gateway decodes too), in one thread and in ``--clients`` threads;
2. ``Classify``: ``--clients`` threads, each its own channel, one unary call per batch;
3. ``ClassifyStream``: the same clients, one bidirectional stream each.

Prints images/s, the ratio to in-process, and p50/p99 latency per batch, and checks
every answer equals the in-process probabilities (a load test: any error is counted).

    nice -n 5 python scripts/bench_gateway.py --clients 4 --batch 32 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    options = parser.parse_args()

    from plankline.imaging.synth import make_roi_library
    from plankline.model.infer import DEFAULT_MODEL_DIR, shared_classifier
    from plankline.stream.auth import new_token, token_digest
    from plankline.stream.client import PlanklineClient
    from plankline.stream.gateway import serve
    from plankline.stream.settings import GatewaySettings

    tmp = Path(tempfile.mkdtemp())
    make_roi_library(tmp / "rois", max(1, options.batch // 5 + 1), seed=7)
    images = [p.read_bytes() for p in sorted((tmp / "rois").rglob("*.png"))][: options.batch]
    token = new_token()
    (tmp / "tokens.json").write_text(json.dumps({"bench": token_digest(token)}))
    running = serve(GatewaySettings(gateway_port=0, gateway_tokens_file=str(tmp / "tokens.json")))
    clf = shared_classifier(DEFAULT_MODEL_DIR)

    def in_process() -> np.ndarray:
        crops = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in images]
        return clf.predict(crops)

    want = in_process()

    def timed(call: object, seconds: float) -> list[float]:
        latencies = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            call()  # type: ignore[operator]
            latencies.append(time.perf_counter() - t0)
        return latencies

    rows = []
    t0 = time.perf_counter()
    lat = timed(in_process, options.seconds)
    rows.append(
        ("in-process predict (1 thread)", lat, len(lat) * len(images), 0, time.perf_counter() - t0)
    )
    threaded: list[list[float]] = [[] for _ in range(options.clients)]

    def local(i: int) -> None:
        threaded[i] = timed(in_process, options.seconds)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=local, args=(i,)) for i in range(options.clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    lat = [x for r in threaded for x in r]
    name = f"in-process predict ({options.clients} threads)"
    rows.append((name, lat, len(lat) * len(images), 0, time.perf_counter() - t0))

    for mode in ("Classify", "ClassifyStream"):
        results: list[list[float]] = [[] for _ in range(options.clients)]
        errors = [0] * options.clients

        def worker(
            i: int,
            mode: str = mode,
            results: list[list[float]] = results,
            errors: list[int] = errors,
        ) -> None:
            with PlanklineClient(f"127.0.0.1:{running.port}", token=token) as api:
                stop = time.perf_counter() + options.seconds
                if mode == "Classify":
                    while time.perf_counter() < stop:
                        t0 = time.perf_counter()
                        try:
                            answer = api.classify(images)
                        except Exception:  # counted, the load goes on
                            errors[i] += 1
                            continue
                        results[i].append(time.perf_counter() - t0)
                        got = np.array([p.probabilities for p in answer.predictions], np.float32)
                        errors[i] += int(not np.array_equal(got, want))
                    return
                sent: list[float] = []
                window = threading.Semaphore(2)  # 2 batches in flight per stream

                def batches() -> object:
                    while time.perf_counter() < stop:
                        window.acquire()
                        sent.append(time.perf_counter())
                        yield images

                for k, answer in enumerate(api.classify_stream(batches())):  # type: ignore[arg-type]
                    window.release()
                    results[i].append(time.perf_counter() - sent[k])
                    got = np.array([p.probabilities for p in answer.predictions], np.float32)
                    errors[i] += int(not np.array_equal(got, want))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(options.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lat = [x for r in results for x in r]
        elapsed = time.perf_counter() - started
        name = f"{mode} ({options.clients} clients)"
        rows.append((name, lat, len(lat) * len(images), sum(errors), elapsed))
    running.stop()

    base = rows[0][2] / rows[0][4]
    print(f"{len(images)} images per batch, {options.seconds:.0f} s each, same run")
    print(f"{'path':34} {'images/s':>9} {'x in-proc':>9} {'p50 ms':>8} {'p99 ms':>8} errors")
    for name, lat, n, errors, elapsed in rows:
        rate = n / elapsed
        p50, p99 = (np.percentile(lat, [50, 99]) * 1000) if lat else (np.nan, np.nan)
        print(f"{name:34} {rate:9.0f} {rate / base:9.2f} {p50:8.1f} {p99:8.1f} {errors:6}")


if __name__ == "__main__":
    main()
