"""Wiring for ``adae-stream run``: config -> (embedded broker) -> detector -> metrics -> pipeline.

Kept apart from the loop so that the pipeline stays TF-free and the wiring stays testable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from adae_stream.config import Config
from adae_stream.errors import ConfigError
from adae_stream.scoring import DetectorSource, ScorerInfo, StreamScorer
from adae_stream.version import __version__

if TYPE_CHECKING:  # the stream and metrics modules are imported when the pipeline starts, not for --help
    from adae_stream.detector.repository import DetectorRepository
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


def load_scorer(cfg: Config, path: str | os.PathLike | None = None) -> StreamScorer:
    """Load the saved detector at ``path`` (default detector.path) and return its stream scorer, warmed up:
    the first live batch pays no tracing."""
    path = path or cfg.detector.path
    if not path:
        raise ConfigError(
            "config key 'detector.path': required for 'run' (a directory written by save_detector / adae-stream "
            "train), or detector.repository"
        )
    from adae_stream.detector.backend import engine, select

    select(cfg.detector.backend)  # before Keras is imported: one backend per process
    from adae_stream.detector.saving import load_detector

    detector = load_detector(path, allow_torchscript=cfg.detector.allow_torchscript)
    scorer = detector.stream_scorer(cfg.batching.bucket_sizes, jit_compile=cfg.detector.jit_compile)
    info = scorer.info
    devices = engine().devices()
    log.info(
        "detector %s loaded: detector_id %s, classifier_id %s (input %s, threshold %.6g, scoring in %s%s); %s devices: "
        "%s",
        path,
        info.detector_id,
        info.classifier_id,
        info.input_shape,
        info.threshold,
        detector.precision,
        " compiled ahead (jit_compile)" if cfg.detector.jit_compile is True else "",  # auto: the scorer logs its choice
        info.runtime,
        ", ".join(devices),
    )
    scorer.warmup(cfg.batching.max_batch_size)
    return scorer


def open_repository(cfg: Config, on_load_failure: Callable[[str], None]) -> DetectorRepository:
    """The repository of detector.repository, read once now (start-up serves what loads)."""
    from adae_stream.detector.repository import DetectorRepository

    assert cfg.detector.repository is not None
    repository = DetectorRepository(
        cfg.detector.repository,
        lambda path: load_scorer(cfg, path),
        max_detectors=cfg.detector.max_detectors,
        on_load_failure=on_load_failure,
    )
    repository.refresh()
    repository.changed()  # what serves at start is current(), not a change
    served = repository.current()
    log.info(
        "detector repository %s: %s",
        cfg.detector.repository,
        ", ".join(
            f"{n} v{d.version}" + (f" (shadow v{d.shadow_version})" if d.shadow else "") for n, d in served.items()
        )
        or "nothing loadable yet (all traffic unrouted until a version loads)",
    )
    return repository


def build_metrics(cfg: Config, info: ScorerInfo | None) -> PipelineMetrics:
    """The service's metrics; ``info`` is the single detector's (None for a repository, whose detectors
    report per detector and version)."""
    from adae_stream.monitoring.metrics import PipelineMetrics

    return PipelineMetrics(
        threshold=info.threshold if info else None,
        reference_scores=info.reference_scores if info else None,
        n_classes=info.n_classes if info else None,
        window_size=cfg.metrics.window_size,
        max_class_labels=cfg.metrics.max_class_labels,
        build_info={
            "version": __version__,
            "detector": info.version if info else "",
            "runtime": info.runtime if info else "",
        },
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

    watcher = None
    detectors: StreamScorer | DetectorSource
    if scorer is None and cfg.detector.repository:
        from adae_stream.detector.repository import RepositoryWatcher

        metrics = build_metrics(cfg, None) if cfg.metrics.enabled else None
        repository = open_repository(cfg, metrics.detector_load_failed if metrics else lambda name: None)
        watcher = RepositoryWatcher(repository, cfg.detector.poll_s)
        detectors = repository
    else:
        scorer = scorer or load_scorer(cfg)
        metrics = build_metrics(cfg, scorer.info) if cfg.metrics.enabled else None
        detectors = scorer
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(kafka_bootstrap(cfg))
        pipeline = Pipeline(cfg, detectors, metrics, bootstrap)
        if watcher is not None:
            watcher.start()
            stack.callback(watcher.stop)
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
            if watcher is not None:
                reread = watcher.trigger
                signal.signal(signal.SIGHUP, lambda _signum, _frame: reread())
        if on_ready is not None:
            on_ready(RunningService(pipeline, metrics, metrics_url))
        return pipeline.run()
