"""Keras 3 serialisation gaps that every config round trip (saving, precision copies) must fill."""

from __future__ import annotations

import tensorflow as tf

# tf.nn activations that Keras 3 serialises under names it cannot resolve again (the seed's own
# examples use tf.nn.softmax). Mapping them to the same functions keeps scores bit-identical.
TF_NN_ACTIVATIONS = {"softmax_v2": tf.nn.softmax, "log_softmax_v2": tf.nn.log_softmax, "swish": tf.nn.swish}
