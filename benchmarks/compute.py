"""(1) the compute floor, (2) the reference way (eager, pass by pass), (3) AdversarialAE.correct()."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np


def rates(
    fns: dict[str, Callable[[], object]], n_instances: int, min_time_s: float = 1.0, rounds: int = 3, warmup: int = 2
) -> dict[str, float]:
    """Instances per second of each fn() (each handles n_instances): the best of ``rounds`` timed windows.

    The variants take turns, one window each per round, so a slow stretch of this shared machine hits
    all of them alike and the ratios between them hold (timing them one after the other once gave
    correct/floor 0.71 in one run and 0.93 in the next).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, 0.0)
    window = min_time_s / rounds
    for _ in range(rounds):
        for name, fn in fns.items():
            calls, start = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= window:
                    break
            best[name] = max(best[name], calls * n_instances / elapsed)
    return best


def floor_fn(det, xb: np.ndarray, jit: bool = False) -> Callable[[], object]:
    """One compiled graph: M(x), AE(x), M(AE(x)), KL, on a batch already held as a tensor."""
    import tensorflow as tf

    from adae_stream.detector.losses import kld

    model, ae = det.model, det.ae
    x = tf.constant(xb)

    @tf.function(jit_compile=jit)
    def graph(x):
        return kld(model(x, training=False), model(ae(x, training=False), training=False))

    return lambda: graph(x).numpy()


def reference_fn(det, xb: np.ndarray, batch_size: int) -> Callable[[], object]:
    """alibi-detect 0.13.0's correct(): eager predict_batch per pass (AE, M(x), M(x_recon)), numpy between."""
    import tensorflow as tf

    from adae_stream.detector.losses import kld

    def predict_batch(x, model):
        return np.concatenate([model(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)])

    def correct():
        x_recon = predict_batch(xb, det.ae)
        y = predict_batch(xb, det.model)
        y_recon = predict_batch(x_recon, det.model)
        score = kld(tf.constant(y), tf.constant(y_recon)).numpy()
        flags = (score > det.threshold).astype(int)
        y_correct = y.copy()
        y_correct[flags == 1] = y_recon[flags == 1]
        return y_correct.argmax(-1), y.argmax(-1), y_recon.argmax(-1)

    return correct


def graph_flops(det) -> int:
    """Floating-point operations per instance of the floor graph, as TF's graph profiler counts them."""
    import tensorflow as tf

    from adae_stream.detector.losses import kld

    fn = tf.function(lambda x: kld(det.model(x), det.model(det.ae(x)))).get_concrete_function(
        tf.TensorSpec((1, *det.input_shape), tf.float32)
    )
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    previous = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # the v1 profiler warns that it is v1
    try:
        return int(tf.compat.v1.profiler.profile(fn.graph, options=opts).total_float_ops)
    finally:
        tf.get_logger().setLevel(previous)


def matmul_peak(dtype: str, n: int = 2048, min_time_s: float = 1.0) -> float:
    """This machine's attainable GFLOP/s: a large square matmul, the best case for any kernel."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    mm = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    return rates({"matmul": lambda: mm().numpy()}, 1, min_time_s)["matmul"] * 2 * n**3 / 1e9


def run_compute(models: dict, batches=(1, 32, 256, 1024), min_time_s: float = 1.0) -> dict:
    from benchmarks.precision import as_precision

    peaks = {d: matmul_peak(d, min_time_s=min_time_s) for d in ("float32", "bfloat16")}
    print(
        f"  machine: float32 matmul {peaks['float32']:.0f} GFLOP/s, bfloat16 matmul {peaks['bfloat16']:.0f} GFLOP/s",
        flush=True,
    )
    rows = []
    for name, (det, x) in models.items():
        det.scorer().warmup(det.input_shape)
        flops = graph_flops(det)
        d16 = as_precision(det, "mixed_bfloat16", x[:256])  # its threshold inferred in bfloat16
        print(f"  {name}: {flops / 1e6:.2f} MFLOP per instance", flush=True)
        for b in batches:
            xb = x[:b]
            xla_scorer = det.scorer(jit_compile=True)
            r = rates(
                {
                    "floor": floor_fn(det, xb),
                    "floor_xla": floor_fn(det, xb, jit=True),
                    "reference": reference_fn(det, xb, b),
                    "correct": partial(det.correct, xb, batch_size=b),
                    "correct_xla": partial(xla_scorer, xb, det.threshold, b),
                    "correct_bf16": partial(d16.correct, xb, batch_size=b),
                },
                b,
                min_time_s,
            )
            floor, floor_xla, ref, api, api_xla, api_bf16 = (
                r[k] for k in ("floor", "floor_xla", "reference", "correct", "correct_xla", "correct_bf16")
            )
            rows.append(
                {
                    "model": name,
                    "batch": b,
                    "mflop_per_instance": flops / 1e6,
                    "floor": floor,
                    "floor_xla": floor_xla,
                    "reference": ref,
                    "correct": api,
                    "correct_xla": api_xla,
                    "correct_bf16": api_bf16,
                    "correct/floor": api / floor,
                    "correct/reference": api / ref,
                    "correct_bf16/reference": api_bf16 / ref,
                    "floor_gflops": floor * flops / 1e9,
                    "reference_gflops": ref * flops / 1e9,
                }
            )
            print(
                f"  {name:8s} batch {b:5d}: floor {floor:10.0f}/s ({floor * flops / 1e9:5.0f} GFLOP/s)  floor+XLA "
                f"{floor_xla:10.0f}/s  "
                f"reference {ref:10.0f}/s ({ref * flops / 1e9:5.0f} GFLOP/s)  correct() {api:10.0f}/s  correct()+XLA "
                f"{api_xla:10.0f}/s  "
                f"correct()+bf16 {api_bf16:10.0f}/s  correct/floor {api / floor:5.2f}  correct/reference "
                f"{api / ref:5.2f}  "
                f"bf16/reference {api_bf16 / ref:5.2f}",
                flush=True,
            )
    return {"peak_gflops": peaks, "rows": rows}
