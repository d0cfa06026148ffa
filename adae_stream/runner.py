"""Wiring for ``adae-stream run``: config -> (embedded broker) -> detector -> metrics -> pipeline.

Kept apart from the loop so that the pipeline stays TF-free and the wiring stays testable.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from adae_stream import __version__
from adae_stream.config import Config, ConfigError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def kafka_bootstrap(cfg: Config) -> Iterator[str]:
    """Yield the bootstrap address; for 'embedded' start a Tansu broker for the duration (always stopped)."""
    if cfg.kafka.bootstrap_servers != "embedded":
        yield cfg.kafka.bootstrap_servers
        return
    from adae_stream.stream.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


def load_scorer(cfg: Config):
    """Load the saved detector named by detector.path and return its stream scorer (warmed up)."""
    if not cfg.detector.path:
        raise ConfigError("config key 'detector.path': required for 'run' (a directory written by save_detector / adae-stream train)")
    from adae_stream.detector.saving import load_detector

    detector = load_detector(cfg.detector.path)
    scorer = detector.stream_scorer(cfg.batching.bucket_sizes, jit_compile=cfg.detector.jit_compile)
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices()]
    log.info("detector %s loaded: detector_id %s, classifier_id %s (input %s, threshold %.6g, scoring in %s%s); "
             "TensorFlow %s devices: %s", cfg.detector.path, scorer.identity["detector_id"], scorer.identity["classifier_id"],
             scorer.input_shape, scorer.threshold, detector.precision,
             " with XLA" if cfg.detector.jit_compile else "", tf.__version__, ", ".join(devices))
    scorer.warmup(cfg.batching.max_batch_size)
    scorer.tf_version = tf.__version__
    return scorer


def build_metrics(cfg: Config, scorer):
    from adae_stream.monitoring.metrics import PipelineMetrics

    return PipelineMetrics(
        threshold=scorer.threshold, reference_scores=scorer.reference_scores, n_classes=getattr(scorer, "n_classes", None),
        window_size=cfg.metrics.window_size, max_class_labels=cfg.metrics.max_class_labels,
        build_info={"version": __version__, "detector": scorer.version, "tensorflow": getattr(scorer, "tf_version", "")},
        detector_identity=scorer.identity,
    )


def run_pipeline(cfg: Config, scorer=None, bootstrap: str | None = None, install_signals: bool = True, on_ready=None) -> int:
    """Run the pipeline to completion; returns the process exit code."""
    from adae_stream.monitoring.server import MetricsServer
    from adae_stream.stream.app import Pipeline

    scorer = scorer or load_scorer(cfg)
    metrics = build_metrics(cfg, scorer) if cfg.metrics.enabled else None
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(kafka_bootstrap(cfg))
        pipeline = Pipeline(cfg, scorer, metrics, bootstrap)
        pipeline.metrics_url = None
        if metrics is not None:
            metrics.ready.set_function(lambda: 1.0 if pipeline.ready else 0.0)
            server = MetricsServer(metrics.registry, cfg.metrics.host, cfg.metrics.port, ready=lambda: pipeline.ready, alive=pipeline.alive).start()
            stack.callback(server.stop)
            pipeline.metrics_url = f"http://{cfg.metrics.host}:{server.port}/metrics"
            metrics.start_drift_thread(cfg.metrics.drift_interval_s)
            stack.callback(metrics.stop)
        if install_signals and threading.current_thread() is threading.main_thread():
            def handle(signum, _frame):
                log.info("received %s: draining, committing and exiting", signal.Signals(signum).name)
                pipeline.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, handle)
        if on_ready is not None:
            on_ready(pipeline)
        return pipeline.run()
