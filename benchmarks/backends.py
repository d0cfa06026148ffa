"""Per Keras backend: correct() against that backend's own fused floor, and fit time, for the tabular and
CIFAR-shaped models (benchmarks/models.py).

    python -m benchmarks.backends             # TF here, then JAX and torch in .venv-jax / .venv-torch
    KERAS_BACKEND=jax python -m benchmarks.backends --one   # one backend, this interpreter, JSON out

The floor is the method's arithmetic alone, KL(M(x) || M(AE(x))) on a batch already on the device,
compiled the way the backend compiles the scorer (tf.function / jax.jit / torch eager); correct() adds
what serving needs (padding to a bucket, flags, labels, the copy back, the dict). Each backend is timed
in its own process, one after the other, so compare ratios within a backend, and backends with care.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = {"tensorflow": ROOT / ".venv", "jax": ROOT / ".venv-jax", "torch": ROOT / ".venv-torch"}
BATCHES = (1, 32, 256, 1024)


def floor_fn(det, xb):
    """The backend's compiled KL alone, on a batch converted to a backend tensor once."""
    import keras

    from adae_stream.detector.losses import kld

    model, ae = det.model, det.ae
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from benchmarks.compute import floor_fn as tf_floor

        return tf_floor(det, xb)
    if backend == "jax":
        import jax

        fn = jax.jit(lambda x: kld(model(x, training=False), model(ae(x, training=False), training=False)))
        x = jax.numpy.asarray(xb)
        return lambda: fn(x).block_until_ready()
    import torch

    x = keras.ops.convert_to_tensor(xb)

    def call():
        with torch.inference_mode():
            return kld(model(x, training=False), model(ae(x, training=False), training=False)).cpu()

    return call


def fit_seconds(det, x, epochs: int, batch_size: int) -> float:
    det.fit(x[:16], epochs=1, batch_size=batch_size, verbose=False)  # build, trace and compile first
    start = time.perf_counter()
    det.fit(x, epochs=epochs, batch_size=batch_size, verbose=False)
    return time.perf_counter() - start


def one(quick: bool) -> dict:
    import keras

    from benchmarks.compute import rates
    from benchmarks.models import cifar, tabular

    out: dict = {"backend": keras.backend.backend(), "rows": [], "fit": {}}
    for name, build in (("tabular", tabular), ("cifar", cifar)):
        det, x = build()
        for b in BATCHES if not quick else (32, 256):
            xb = x[:b]
            fns = {"floor": floor_fn(det, xb), "correct": partial(det.correct, xb, batch_size=b)}
            r = rates(fns, len(xb), min_time_s=0.6 if quick else 1.5)
            out["rows"].append({"model": name, "batch": b, **r, "ratio": r["correct"] / r["floor"]})
        n, epochs = (4096, 3) if name == "tabular" else (512, 1)
        out["fit"][name] = {"instances": n, "epochs": epochs, "seconds": fit_seconds(det, x[:n], epochs, 64)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.backends")
    ap.add_argument("--one", action="store_true", help="this interpreter's backend only, JSON on stdout")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write all figures to this file")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.quick)))
        return 0
    results = {}
    for backend, env in ENVIRONMENTS.items():
        python = env / "bin" / "python"
        if not python.exists():
            print(f"{backend}: {python} missing (make test builds it); skipped")
            continue
        cmd = [str(python), "-m", "benchmarks.backends", "--one"] + (["--quick"] if args.quick else [])
        env_vars = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(cmd, cwd=ROOT, env=env_vars, capture_output=True, text=True, check=True)
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'backend':10} {'model':8} {'batch':>5} {'floor/s':>10} {'correct/s':>10} {'ratio':>6}")
    for backend, res in results.items():
        for r in res["rows"]:
            print(
                f"{backend:10} {r['model']:8} {r['batch']:5d} {r['floor']:10.0f} {r['correct']:10.0f} {r['ratio']:6.2f}"
            )
    for backend, res in results.items():
        fits = ", ".join(
            f"{m} {f['epochs']} epoch(s) of {f['instances']}: {f['seconds']:.2f} s" for m, f in res["fit"].items()
        )
        print(f"fit {backend}: {fits}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
