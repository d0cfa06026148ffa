"""Mixed precision, measured: the compute floor in float32 vs mixed_bfloat16, and how far scores and flags move.

    python -m benchmarks.precision
"""
from __future__ import annotations

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def with_policy(model, policy: str):
    """A copy of a Keras model whose layers compute in `policy` (config rewrite + the same weights)."""
    def rewrite(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": policy}}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    copy = model.__class__.from_config(rewrite(model.get_config()))
    if not copy.built:
        copy.build(model.input_shape)
    copy.set_weights(model.get_weights())
    leaf = copy
    while getattr(leaf, "layers", None):
        leaf = leaf.layers[-1]
    assert leaf.dtype_policy.name == policy, f"policy not applied: {leaf.name} computes in {leaf.compute_dtype}"
    return copy


def main() -> int:
    import tensorflow as tf

    from adae_stream.detector.losses import kld
    from benchmarks.compute import rate
    from benchmarks.models import cifar, tabular

    for name, (det, x) in (("cifar", cifar()), ("tabular", tabular())):
        m16, a16 = with_policy(det.model, "mixed_bfloat16"), with_policy(det.ae, "mixed_bfloat16")
        g32 = tf.function(lambda t: kld(det.model(t), det.model(det.ae(t))))
        g16 = tf.function(lambda t: kld(tf.cast(m16(t), tf.float32), tf.cast(m16(a16(t)), tf.float32)))
        for b in (32, 256):
            xt = tf.constant(x[:b])
            r32 = rate(lambda: g32(xt).numpy(), b, 1.5)
            r16 = rate(lambda: g16(xt).numpy(), b, 1.5)
            s32, s16 = g32(xt).numpy(), g16(xt).numpy()
            thr = np.percentile(s32, 90)
            print(f"  {name:8s} batch {b:4d}: float32 floor {r32:9.0f}/s  mixed_bfloat16 floor {r16:9.0f}/s  speed-up {r16 / r32:4.2f}  "
                  f"median |score error| {np.median(np.abs(s16 - s32) / (np.abs(s32) + 1e-12)):.1%}  "
                  f"flags flipped at a p90 threshold {np.mean((s16 > thr) != (s32 > thr)):.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
