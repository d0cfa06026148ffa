"""GPU scoring throughput on a machine with CUDA and PyTorch or JAX but no TensorFlow and no network.

    make wheelhouse                                  # here: .wheelhouse/ (adae-stream + Keras' pure deps)
    pip install --no-index --find-links .wheelhouse adae-stream keras   # there (torch or jax preinstalled)
    KERAS_BACKEND=torch python -m benchmarks.device  # or KERAS_BACKEND=jax

For the CIFAR-shaped and tabular models (benchmarks/models.py) it times the stream's scorer at bucket
sizes 1-4096, host->device copy, compute and the copy back included (the scorer takes and returns
numpy), against the device's own float32 matmul and conv floors, with TF32 on and off.
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial

os.environ.setdefault("KERAS_BACKEND", "torch")
SIZES = (1, 4, 16, 64, 256, 1024, 4096)


def set_tf32(on: bool) -> None:
    import keras

    if keras.backend.backend() == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    else:
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if on else "highest")


def _timed(fn, min_time_s: float = 1.0) -> float:
    """Seconds per call: the best of three windows, after two warm-up calls."""
    fn(), fn()
    best = float("inf")
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_time_s / 3 or calls == 0:
            fn()
            calls += 1
        best = min(best, elapsed / calls)
    return best


def floors(smoke: bool = False) -> dict[str, float]:
    """TFLOP/s of a 8192^2 matmul and a 3x3 conv (256 channels, 64x64, batch 64) on the device
    (512^2 and batch 2 with --smoke, a CPU check that the script runs)."""
    import keras
    from keras import ops

    n, batch = (512, 2) if smoke else (8192, 64)
    a = keras.random.normal((n, n))
    x = keras.random.normal((batch, 64, 64, 256))
    k = keras.random.normal((3, 3, 256, 256))

    def sync(t):
        return ops.convert_to_numpy(ops.sum(t))

    matmul = _timed(lambda: sync(ops.matmul(a, a)))
    conv = _timed(lambda: sync(ops.conv(x, k, padding="same")))
    return {"matmul_tflops": 2 * n**3 / matmul / 1e12, "conv_tflops": 2 * batch * 64 * 64 * 256 * 256 * 9 / conv / 1e12}


def main(argv: list[str] | None = None) -> int:
    import argparse

    import keras
    import numpy as np

    from adae_stream.detector.backend import engine
    from benchmarks.models import cifar, tabular

    ap = argparse.ArgumentParser(prog="python -m benchmarks.device")
    ap.add_argument("--smoke", action="store_true", help="small floors and buckets up to 64: check it runs (CPU)")
    smoke = ap.parse_args(argv).smoke
    sizes = tuple(s for s in SIZES if s <= 64) if smoke else SIZES
    out: dict = {"backend": keras.backend.backend(), "devices": engine().devices(), "runtime": engine().runtime()}
    for tf32 in (False, True):
        set_tf32(tf32)
        run: dict = {"floors": floors(smoke), "models": {}}
        for name, build in (("tabular", tabular), ("cifar", cifar)):
            det, x = build()
            scorer = det.scorer(bucket_sizes=sizes)
            big = np.concatenate([x] * (4096 // len(x) + 1))[:4096]
            run["models"][name] = {  # instances/s
                str(b): b / _timed(partial(scorer, big[:b], det.threshold, b)) for b in sizes
            }
        out["tf32_on" if tf32 else "tf32_off"] = run
        print(json.dumps({("tf32_on" if tf32 else "tf32_off"): run}), flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
