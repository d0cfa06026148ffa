"""Wiring for ``adae-stream run``: config -> (embedded broker) -> detector -> metrics -> pipeline.

Kept apart from the loop so that the pipeline stays TF-free and the wiring stays testable.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from adae_stream.config import Config
from adae_stream.errors import ConfigError
from adae_stream.scoring import ScorerInfo, StreamScorer
from adae_stream.version import __version__

if TYPE_CHECKING:  # the stream and metrics modules are imported when the pipeline starts, not for --help
    from adae_stream.monitoring.metrics import PipelineMetrics
    from adae_stream.stream.app import Pipeline

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


def load_scorer(cfg: Config) -> StreamScorer:
    """Load the saved detector named by detector.path and return its stream scorer (warmed up)."""
    if not cfg.detector.path:
        raise ConfigError(
            "config key 'detector.path': required for 'run' (a directory written by save_detector / adae-stream train)"
        )
    import tensorflow as tf

    from adae_stream.detector.saving import load_detector

    detector = load_detector(cfg.detector.path)
    scorer = detector.stream_scorer(cfg.batching.bucket_sizes, jit_compile=cfg.detector.jit_compile)
    info = scorer.info
    devices = [d.name for d in tf.config.list_logical_devices()]
    log.info(
        "detector %s loaded: detector_id %s, classifier_id %s (input %s, threshold %.6g, scoring in %s%s); %s devices: "
        "%s",
        cfg.detector.path,
        info.detector_id,
        info.classifier_id,
        info.input_shape,
        info.threshold,
        detector.precision,
        " with XLA" if cfg.detector.jit_compile else "",
        info.runtime,
        ", ".join(devices),
    )
    scorer.warmup(cfg.batching.max_batch_size)
    return scorer


def build_metrics(cfg: Config, info: ScorerInfo) -> PipelineMetrics:
    from adae_stream.monitoring.metrics import PipelineMetrics

    return PipelineMetrics(
        threshold=info.threshold,
        reference_scores=info.reference_scores,
        n_classes=info.n_classes,
        window_size=cfg.metrics.window_size,
        max_class_labels=cfg.metrics.max_class_labels,
        build_info={"version": __version__, "detector": info.version, "runtime": info.runtime},
        detector_identity=info.identity,
    )


@dataclass(frozen=True)
class RunningService:
    """What run_pipeline hands to ``on_ready`` once everything is built, just before the loop starts."""

    pipeline: Pipeline
    metrics: PipelineMetrics | None  # None when metrics.enabled is false
    metrics_url: str | None


def run_pipeline(
    cfg: Config,
    scorer: StreamScorer | None = None,
    bootstrap: str | None = None,
    install_signals: bool = True,
    on_ready: Callable[[RunningService], None] | None = None,
) -> int:
    """Run the pipeline to completion; returns the process exit code."""
    from adae_stream.monitoring.server import MetricsServer
    from adae_stream.stream.app import Pipeline

    scorer = scorer or load_scorer(cfg)
    metrics = build_metrics(cfg, scorer.info) if cfg.metrics.enabled else None
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(kafka_bootstrap(cfg))
        pipeline = Pipeline(cfg, scorer, metrics, bootstrap)
        metrics_url = None
        if metrics is not None:
            metrics.ready.set_function(lambda: 1.0 if pipeline.ready else 0.0)
            server = MetricsServer(
                metrics.registry, cfg.metrics.host, cfg.metrics.port, ready=lambda: pipeline.ready, alive=pipeline.alive
            ).start()
            stack.callback(server.stop)
            metrics_url = f"http://{cfg.metrics.host}:{server.port}/metrics"
            metrics.start_drift_thread(cfg.metrics.drift_interval_s)
            stack.callback(metrics.stop)
        if install_signals and threading.current_thread() is threading.main_thread():

            def drain_on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("received %s: draining, committing and exiting", signal.Signals(signum).name)
                pipeline.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, drain_on_signal)
        if on_ready is not None:
            on_ready(RunningService(pipeline, metrics, metrics_url))
        return pipeline.run()
