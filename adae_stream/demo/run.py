"""The demo's main flow: broker -> detector -> pipeline -> traffic -> live view -> report.

Everything runs in this process except the broker: the pipeline on a thread (exactly the code path of
``adae-stream run``), a traffic generator on another, and the answer collector on the main thread.
"""

from __future__ import annotations

import heapq
import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adae_stream.clients import Consumer, ConsumerRecord
from adae_stream.codecs.records import PREDICTION_HEADER
from adae_stream.config import Config, KafkaConfig
from adae_stream.demo.live_view import LiveView, live_accuracy, render, render_changes
from adae_stream.errors import UnreadableAnswer

if TYPE_CHECKING:
    from adae_stream.demo.changes import ChangeWatch

log = logging.getLogger(__name__)
DEMO_FEEDBACK_TOPIC = "adae-feedback"  # where the demo labels its own traffic, unless the config names one


@dataclass
class Sent:
    kind: str
    labels: np.ndarray
    t_sent: float


class TrafficGenerator(threading.Thread):
    """Produces V2 requests of `batch` instances of one kind each, at `rate` requests/s, for `duration_s`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        pools: dict,
        mix: dict[str, float],
        rate: float,
        batch: int,
        duration_s: float,
        seed: int,
        kafka: KafkaConfig,
        incident: tuple[str, float, float] | None = None,
    ) -> None:
        """incident: (kind, share, at_s): from at_s on, that share of requests is of that kind."""
        super().__init__(name="adae-demo-traffic", daemon=True)
        from adae_stream.clients.build import plain_producer

        self.producer = plain_producer(kafka, bootstrap, linger_ms=5)
        self.topic, self.pools, self.rate, self.batch, self.duration_s = topic, pools, rate, batch, duration_s
        kinds = [k for k in mix if mix[k] > 0]
        unknown = [k for k in kinds if k not in pools]
        if unknown:
            raise ValueError(f"unknown traffic kinds in mix: {unknown} (known: {', '.join(pools)})")
        weights = np.array([mix[k] for k in kinds], dtype=float)
        self.kinds, self.probabilities = kinds, weights / weights.sum()
        self.incident = incident
        if incident is not None:
            if incident[0] not in pools:
                raise ValueError(f"unknown incident kind {incident[0]!r} (known: {', '.join(pools)})")
            if incident[0] not in self.kinds:
                self.kinds.append(incident[0])
                self.probabilities = np.append(self.probabilities, 0.0)
            after = self.probabilities * (1.0 - incident[1])
            after[self.kinds.index(incident[0])] += incident[1]
            self.incident_probabilities = after
        self.started_at: float | None = None
        self.rng = np.random.default_rng(seed)
        self.sent: dict[str, Sent] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.run_tag = uuid.uuid4().hex[:6]

    def run(self) -> None:
        from adae_stream.codecs import encode_request

        start = self.started_at = time.monotonic()
        i = 0
        while not self.stop_event.is_set() and time.monotonic() - start < self.duration_s:
            probabilities = self.probabilities
            if self.incident is not None and time.monotonic() - start >= self.incident[2]:
                probabilities = self.incident_probabilities
            kind = self.kinds[self.rng.choice(len(self.kinds), p=probabilities)]
            X, y = self.pools[kind]
            idx = self.rng.integers(0, len(X), self.batch)
            rid = f"demo-{self.run_tag}-{i}"
            payload, headers = encode_request(X[idx], "v2", rid)
            with self.lock:
                self.sent[rid] = Sent(kind, y[idx], time.monotonic())
            self.producer.send(
                self.topic, value=payload, key=rid.encode(), headers=[*headers, ("adae-demo-kind", kind.encode())]
            )
            i += 1
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
        self.producer.flush()
        self.producer.close()


class FeedbackSender:
    """Publishes the labels the demo knows as feedback, the way a labelling pipeline would: seconds after
    the answer, some never (loss), some twice (duplicates)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        seed: int,
        kafka: KafkaConfig,
        delay_s: tuple[float, float] = (0.5, 3.0),
        loss: float = 0.1,
        duplicate: float = 0.05,
    ) -> None:
        from adae_stream.clients.build import plain_producer

        self.producer = plain_producer(kafka, bootstrap, linger_ms=5)
        self.topic, self.delay_s, self.loss, self.duplicate = topic, delay_s, loss, duplicate
        self.rng = np.random.default_rng(seed + 1)
        self.due: list[tuple[float, str, list[int]]] = []
        self.counts = {"sent": 0, "lost": 0, "duplicated": 0}

    def answered(self, request_id: str, labels: np.ndarray) -> None:
        if self.rng.random() < self.loss:
            self.counts["lost"] += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        self.counts["duplicated"] += copies - 1
        for _ in range(copies):
            heapq.heappush(self.due, (time.monotonic() + self.rng.uniform(*self.delay_s), request_id, labels.tolist()))

    def send_due(self, flush_all: bool = False) -> None:
        now = time.monotonic()
        while self.due and (flush_all or self.due[0][0] <= now):
            _, request_id, labels = heapq.heappop(self.due)
            self.producer.send(
                self.topic, value=json.dumps({"id": request_id, "labels": labels}).encode(), key=request_id.encode()
            )
            self.counts["sent"] += 1

    def close(self) -> None:
        self.send_due(flush_all=True)
        self.producer.flush()
        self.producer.close()


class _PipelineThread(threading.Thread):
    """The service on a thread of the demo's own process: its exit code, and the running service once built."""

    def __init__(self, cfg: Config, scorer: Any, bootstrap: str) -> None:
        super().__init__(name="adae-pipeline", daemon=True)
        self.cfg, self.scorer, self.bootstrap = cfg, scorer, bootstrap
        self.rc: int | None = None
        self.service: Any = None  # runner.RunningService
        self._built = threading.Event()

    def run(self) -> None:
        from adae_stream.runner import run_pipeline

        self.rc = run_pipeline(self.cfg, self.scorer, self.bootstrap, install_signals=False, on_ready=self._on_ready)

    def _on_ready(self, service: Any) -> None:
        self.service = service
        self._built.set()

    def wait_ready(self, timeout_s: float = 90.0) -> bool:
        """Until the pipeline has its partitions (True), or it stopped or the time ran out (False)."""
        deadline = time.monotonic() + timeout_s
        if not self._built.wait(timeout_s):
            return False
        while not self.service.pipeline.ready and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.is_alive() and self.service.pipeline.ready

    def stop(self) -> None:
        if self.service is not None:
            self.service.pipeline.stop()


class _Watch:
    """The demo's side of the loop: match answers to what was sent, label them, draw the live view."""

    def __init__(self, gen: TrafficGenerator, feedback: FeedbackSender, registry: Any, duration_s: float) -> None:
        from adae_stream.demo.stats import DemoStats

        self.gen, self.feedback, self.registry, self.duration_s = gen, feedback, registry, duration_s
        self.stats, self.view = DemoStats(), LiveView()
        self.answered_instances = 0
        self.start = time.monotonic()
        self.changes: ChangeWatch | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def live(self) -> dict | None:
        return live_accuracy(self.registry) if self.registry is not None else None

    def take(self, rec: ConsumerRecord, now: float) -> None:
        from adae_stream.codecs import decode_response

        try:
            ans = decode_response(rec.value, rec.headers)
        except UnreadableAnswer as exc:  # not ours: the topic may be shared
            log.warning("skipping a record of %s: %s", rec.topic, exc)
            return
        with self.gen.lock:
            sent = self.gen.sent.get(ans["id"])
        self.stats.answered_ids[ans["id"]] += 1
        if sent is not None and self.stats.answered_ids[ans["id"]] == 1:
            published = (dict(rec.headers or ()).get(PREDICTION_HEADER) or b"corrected").decode(errors="replace")
            self.stats.add(sent.kind, sent.labels, ans, now - sent.t_sent, published, self.elapsed)
            self.answered_instances += len(sent.labels)
            self.feedback.answered(ans["id"], sent.labels)

    def draw(self, force: bool = False) -> None:
        elapsed = self.elapsed
        rate = self.answered_instances / max(elapsed, 1e-9)
        text = render(elapsed, self.duration_s, len(self.gen.sent), self.stats, rate, self.live())
        if self.changes is not None:
            text += "\n" + render_changes(self.changes, self.gen.incident)
        self.view.draw(text, force=force)

    def until_answered(self, consumer: Consumer, pipe: _PipelineThread) -> None:
        """Until every request sent is answered, 60 s past the traffic's end, or the pipeline stops."""
        while True:
            for records in consumer.poll(timeout_ms=200).values():
                now = time.monotonic()
                for rec in records:
                    self.take(rec, now)
            self.feedback.send_due()
            self.draw()
            with self.gen.lock:
                outstanding = len(set(self.gen.sent) - set(self.stats.answered_ids))
            if not self.gen.is_alive() and outstanding == 0:
                return
            if not self.gen.is_alive() and self.elapsed > self.duration_s + 60:
                print(f"adae-stream demo: {outstanding} requests still unanswered after 60 s", file=sys.stderr)
                return
            if not pipe.is_alive():
                print("adae-stream demo: the pipeline stopped unexpectedly", file=sys.stderr)
                return


def _demo_config(cfg: Config) -> tuple[Config, str] | None:
    """The caller's config with the demo's own topics (it labels its traffic and captures flagged
    requests), and the input topic it produces to; None when the config names no input topic."""
    from adae_stream.config import input_topics, validate_topics

    topics = input_topics(cfg.kafka)
    if not topics:
        print(
            "adae-stream demo: the demo produces to kafka.input_topic; kafka.input_pattern names none", file=sys.stderr
        )
        return None
    cfg = cfg.model_copy(deep=True)  # never the caller's
    cfg.kafka.feedback_topic = cfg.kafka.feedback_topic or DEMO_FEEDBACK_TOPIC
    cfg.kafka.flagged_topic = cfg.kafka.flagged_topic or "adae-flagged"
    validate_topics(cfg.kafka, cfg.monitoring.enabled)  # the shadow and evidence topics that feedback brings
    return cfg, topics[0]


def run_demo(config: Config) -> int:
    from adae_stream.clients.build import plain_reader
    from adae_stream.demo.changes import ChangeWatch, demo_monitoring
    from adae_stream.demo.checks import delivery_check, wait_for_labels
    from adae_stream.demo.decisions import DemoDecider, repository_config
    from adae_stream.demo.detector_cache import load_or_train, traffic_pools
    from adae_stream.demo.report import write_report
    from adae_stream.runner import kafka_bootstrap

    demo = _demo_config(config)
    if demo is None:
        return 2
    cfg, topic = demo
    d = cfg.demo
    t0 = time.monotonic()
    detector, det_path, cached = load_or_train(d.cache_dir, d.epochs, d.seed)
    trained = "from cache" if cached else f"trained in {time.monotonic() - t0:.1f}s"
    print(f"detector: {det_path} ({trained}), threshold {detector.threshold:.4g}")
    cfg = demo_monitoring(repository_config(cfg, det_path, topic))
    pools = traffic_pools(detector, d.seed)
    with kafka_bootstrap(cfg) as bootstrap:
        print(f"Kafka: {'embedded Tansu broker at ' if cfg.kafka.bootstrap_servers == 'embedded' else ''}{bootstrap}")
        pipe = _PipelineThread(cfg, None, bootstrap)
        decider: DemoDecider | None = None
        changes: ChangeWatch | None = None
        pipe.start()
        # answers are matched to this run's request ids, so reading from the start is safe on a used topic
        consumer = plain_reader(cfg.kafka, bootstrap, cfg.kafka.output_topic)
        try:  # whatever happens, the traffic, the pipeline and the reader are stopped
            if not pipe.wait_ready():
                print("adae-stream demo: the pipeline did not become ready (see the log above)", file=sys.stderr)
                return 1
            service = pipe.service
            print(f"pipeline ready; metrics: {service.metrics_url or 'disabled'}")
            registry = service.metrics.registry if service.metrics else None
            decider = DemoDecider(cfg, bootstrap, registry)  # decides what answers publish, from this run's labels
            decider.start()
            print(f"decision-maker: writes {cfg.detector.repository}/digits/policy.yaml")
            incident = (d.incident_kind, d.incident_share, d.incident_at * d.duration_s) if d.incident_share else None
            gen = TrafficGenerator(
                bootstrap, topic, pools, d.mix, d.rate, d.batch, d.duration_s, d.seed, cfg.kafka, incident
            )
            feedback = FeedbackSender(bootstrap, cfg.kafka.feedback_topic or DEMO_FEEDBACK_TOPIC, d.seed, cfg.kafka)
            watch = _Watch(gen, feedback, service.metrics.registry if service.metrics else None, d.duration_s)
            if cfg.monitoring.enabled:
                changes = watch.changes = ChangeWatch(cfg, bootstrap, registry, time.monotonic())
                changes.start()
            try:
                gen.start()
                watch.until_answered(consumer, pipe)
            except KeyboardInterrupt:
                print("\ninterrupted: stopping traffic and the pipeline", file=sys.stderr)
            finally:
                gen.stop_event.set()
            elapsed = watch.elapsed
            feedback.close()  # the labels still due go out now; the pipeline joins them before it stops
            wait_for_labels(watch.registry, feedback.counts["sent"], timeout_s=15)
            watch.draw(force=True)
            live_final = watch.live()
            gen.join(10)
            pipe.stop()
            pipe.join(60)
            # Delivery check: read the whole output topic once more, independently of the live view.
            delivery = delivery_check(bootstrap, cfg.kafka, set(gen.sent))
        finally:
            if decider is not None:
                decider.stop()
            if changes is not None:
                changes.stop()
            pipe.stop()
            consumer.close()
    stats = watch.stats
    run_info = {
        "throughput": watch.answered_instances / max(elapsed, 1e-9),
        "p50_ms": stats.latency_ms(50),
        "p99_ms": stats.latency_ms(99),
        "duration_s": elapsed,
        "pipeline_exit_code": pipe.rc,
        "feedback_sent": feedback.counts,
        "live_accuracy_from_metrics": live_final,
        "decisions": decider.summary() if decider is not None else [],
        "decision_standing": decider.standing() if decider is not None else {},
        "published": stats.published_table(),
        "incident": None if gen.incident is None else dict(zip(("kind", "share", "at_s"), gen.incident, strict=True)),
        "changes": changes.alarms() if changes is not None else None,
        "change_baseline_instances": cfg.monitoring.baseline_instances,
    }
    out = write_report(d.report_dir, stats, detector.threshold, delivery, run_info)
    print(
        f"\nproduced {delivery['produced']} requests; answered {delivery['answered']}, missing {delivery['missing']}, "
        f"duplicated {delivery['duplicates']}"
    )
    print(f"report: {out / 'report.md'} (plots: {out / 'scores.png'}, {out / 'accuracy.png'})")
    return 0 if delivery["missing"] == 0 and pipe.rc == 0 else 1
