"""The demo's main flow: broker -> detector -> pipeline -> traffic -> live view -> report.

Everything runs in this process except the broker: the pipeline on a thread (exactly the code path of
``adae-stream run``), a traffic generator on another, and the answer collector on the main thread.
"""

from __future__ import annotations

import copy
import heapq
import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from adae_stream.config import Config, KafkaConfig
from adae_stream.errors import UnreadableAnswer
from adae_stream.stream.feedback import FEEDBACK_RESULTS, PREDICTIONS

log = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__(name="adae-demo-traffic", daemon=True)
        from adae_stream.stream.clients import plain_producer

        self.producer = plain_producer(kafka, bootstrap, linger_ms=5)
        self.topic, self.pools, self.rate, self.batch, self.duration_s = topic, pools, rate, batch, duration_s
        kinds = [k for k in mix if mix[k] > 0]
        unknown = [k for k in kinds if k not in pools]
        if unknown:
            raise ValueError(f"unknown traffic kinds in mix: {unknown} (known: {', '.join(pools)})")
        weights = np.array([mix[k] for k in kinds], dtype=float)
        self.kinds, self.probabilities = kinds, weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.sent: dict[str, Sent] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.run_tag = uuid.uuid4().hex[:6]

    def run(self) -> None:
        from adae_stream.stream.codecs import encode_request

        start = time.monotonic()
        i = 0
        while not self.stop_event.is_set() and time.monotonic() - start < self.duration_s:
            kind = self.kinds[self.rng.choice(len(self.kinds), p=self.probabilities)]
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
        from adae_stream.stream.clients import plain_producer

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


def live_accuracy(registry) -> dict[str, float]:
    """Live accuracy of each prediction as the service's own metrics report it (labelled instances only)."""
    n = registry.get_sample_value("adae_feedback_instances_total") or 0.0
    out = {"labelled_instances": n}
    for prediction in PREDICTIONS:
        correct = registry.get_sample_value("adae_feedback_correct_total", {"prediction": prediction}) or 0.0
        out[prediction] = correct / n if n else float("nan")
    return out


class LiveView:
    """A refreshing console table on a terminal; plain periodic lines when output is not a TTY."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lines_drawn = 0
        self.last = 0.0

    def draw(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (1.0 if self.tty else 5.0):
            return
        self.last = now
        if self.tty:
            if self.lines_drawn:
                self.stream.write(f"\x1b[{self.lines_drawn}F\x1b[J")
            self.stream.write(text + "\n")
            self.lines_drawn = text.count("\n") + 1
        else:
            self.stream.write(text + "\n\n")
        self.stream.flush()


def render(
    elapsed: float, duration: float, gen: TrafficGenerator, stats, throughput: float, live: dict | None = None
) -> str:
    frac = min(1.0, elapsed / duration) if duration else 1.0
    bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
    answered = sum(r["requests"] for r in stats.table())
    lines = [
        f"[{bar}] {frac * 100:5.1f}%  t={elapsed:5.1f}s  produced {len(gen.sent)}  answered {answered}  "
        f"throughput {throughput:7.0f} inst/s  latency p50 {stats.latency_ms(50):6.1f} ms p99 "
        f"{stats.latency_ms(99):6.1f} ms",
        f"{'kind':<10} {'inst':>6} {'flagged':>8} {'AUROC':>6} {'acc undef':>9} {'acc def':>8} {'acc corr':>8}",
    ]
    for r in stats.table():
        au = "" if r["kind"] == "clean" or np.isnan(r["auroc_vs_clean"]) else f"{r['auroc_vs_clean']:.2f}"
        lines.append(
            f"{r['kind']:<10} {r['instances']:>6} {r['flag_rate']:>8.1%} {au:>6} {r['acc_no_defense']:>9.1%} "
            f"{r['acc_defense']:>8.1%} {r['acc_corrected']:>8.1%}"
        )
    if live is not None and live["labelled_instances"]:
        lines.append(
            f"{'live (feedback, from the service metrics)':<44} {live['labelled_instances']:>6.0f} labelled: "
            f"undef {live['no_defense']:.1%} def {live['defense']:.1%} corr {live['corrected']:.1%}"
        )
    return "\n".join(lines)


def run_demo(cfg: Config) -> int:
    from adae_stream.config import input_topics
    from adae_stream.demo.detector_cache import load_or_train, traffic_pools
    from adae_stream.demo.report import write_report
    from adae_stream.demo.stats import DemoStats
    from adae_stream.runner import RunningService, kafka_bootstrap, load_scorer, run_pipeline
    from adae_stream.stream.clients import plain_reader
    from adae_stream.stream.codecs import decode_response

    cfg = copy.deepcopy(cfg)  # the demo sets its own topics and detector below, never the caller's
    d = cfg.demo
    topics = input_topics(cfg.kafka)
    if not topics:
        print(
            "adae-stream demo: the demo produces to kafka.input_topic; kafka.input_pattern names none", file=sys.stderr
        )
        return 2
    # close the loop: the demo labels its own traffic, and captures flagged requests for review
    cfg.kafka.feedback_topic = cfg.kafka.feedback_topic or "adae-feedback"
    cfg.kafka.flagged_topic = cfg.kafka.flagged_topic or "adae-flagged"
    t0 = time.monotonic()
    detector, det_path, cached = load_or_train(d.cache_dir, d.epochs, d.seed)
    print(
        f"detector: {det_path} ({'from cache' if cached else f'trained in {time.monotonic() - t0:.1f}s'}), threshold "
        f"{detector.threshold:.4g}"
    )
    cfg.detector.path = str(det_path)
    pools = traffic_pools(detector, d.seed)
    scorer = load_scorer(cfg)
    with kafka_bootstrap(cfg) as bootstrap:
        print(f"Kafka: {'embedded Tansu broker at ' if cfg.kafka.bootstrap_servers == 'embedded' else ''}{bootstrap}")
        holder: dict = {}
        ready = threading.Event()

        def on_ready(service: RunningService) -> None:
            holder["service"] = service
            ready.set()

        pipe_thread = threading.Thread(
            target=lambda: holder.setdefault(
                "rc", run_pipeline(cfg, scorer, bootstrap, install_signals=False, on_ready=on_ready)
            ),
            name="adae-pipeline",
            daemon=True,
        )
        pipe_thread.start()
        # answers are matched to this run's request ids, so reading from the start is safe on a used topic
        consumer = plain_reader(cfg.kafka, bootstrap, cfg.kafka.output_topic)
        deadline = time.monotonic() + 90
        service: RunningService | None = holder["service"] if ready.wait(60) else None
        while service is not None and not service.pipeline.ready and time.monotonic() < deadline:
            if not pipe_thread.is_alive():
                break  # it stopped: the check below reports it
            time.sleep(0.1)
        if service is None or not pipe_thread.is_alive() or not service.pipeline.ready:
            print("adae-stream demo: the pipeline did not become ready (see the log above)", file=sys.stderr)
            if service is not None:
                service.pipeline.stop()
            consumer.close()
            return 1
        pipeline = service.pipeline
        print(f"pipeline ready; metrics: {service.metrics_url or 'disabled'}")
        gen = TrafficGenerator(bootstrap, topics[0], pools, d.mix, d.rate, d.batch, d.duration_s, d.seed, cfg.kafka)
        feedback = FeedbackSender(bootstrap, cfg.kafka.feedback_topic, d.seed, cfg.kafka)
        registry = service.metrics.registry if service.metrics is not None else None

        def live() -> dict | None:
            return live_accuracy(registry) if registry is not None else None

        stats = DemoStats()
        view = LiveView()
        answered_instances = 0
        start = time.monotonic()
        try:  # whatever happens while watching, the traffic and the pipeline are stopped
            gen.start()
            try:
                while True:
                    for records in consumer.poll(timeout_ms=200).values():
                        now = time.monotonic()
                        for rec in records:
                            try:
                                ans = decode_response(rec.value, rec.headers)
                            except UnreadableAnswer as exc:  # not ours: the topic may be shared
                                log.warning("skipping a record of %s: %s", rec.topic, exc)
                                continue
                            with gen.lock:
                                sent = gen.sent.get(ans["id"])
                            stats.answered_ids[ans["id"]] += 1
                            if sent is not None and stats.answered_ids[ans["id"]] == 1:
                                stats.add(sent.kind, sent.labels, ans, now - sent.t_sent)
                                answered_instances += len(sent.labels)
                                feedback.answered(ans["id"], sent.labels)
                    feedback.send_due()
                    elapsed = time.monotonic() - start
                    view.draw(
                        render(elapsed, d.duration_s, gen, stats, answered_instances / max(elapsed, 1e-9), live())
                    )
                    with gen.lock:
                        outstanding = len(set(gen.sent) - set(stats.answered_ids))
                    if not gen.is_alive() and outstanding == 0:
                        break
                    if not gen.is_alive() and elapsed > d.duration_s + 60:
                        print(f"adae-stream demo: {outstanding} requests still unanswered after 60 s", file=sys.stderr)
                        break
                    if not pipe_thread.is_alive():
                        print("adae-stream demo: the pipeline stopped unexpectedly", file=sys.stderr)
                        break
            except KeyboardInterrupt:
                print("\ninterrupted: stopping traffic and the pipeline", file=sys.stderr)
                gen.stop_event.set()
            elapsed = time.monotonic() - start
            feedback.close()  # the labels still due go out now; the pipeline joins them before it stops
            _wait_for_labels(registry, feedback.counts["sent"], timeout_s=15)
            view.draw(
                render(elapsed, d.duration_s, gen, stats, answered_instances / max(elapsed, 1e-9), live()), force=True
            )
            live_final = live()
            gen.stop_event.set()
            gen.join(10)
            pipeline.stop()
            pipe_thread.join(60)
            # Delivery check: read the whole output topic once more, independently of the live view.
            delivery = _delivery_check(bootstrap, cfg.kafka, set(gen.sent))
            consumer.close()
        finally:
            gen.stop_event.set()
            pipeline.stop()
    run_info = {
        "throughput": answered_instances / max(elapsed, 1e-9),
        "p50_ms": stats.latency_ms(50),
        "p99_ms": stats.latency_ms(99),
        "duration_s": elapsed,
        "pipeline_exit_code": holder.get("rc"),
        "feedback_sent": feedback.counts,
        "live_accuracy_from_metrics": live_final,
    }
    out = write_report(d.report_dir, stats, detector.threshold, delivery, run_info)
    print(
        f"\nproduced {delivery['produced']} requests; answered {delivery['answered']}, missing {delivery['missing']}, "
        f"duplicated {delivery['duplicates']}"
    )
    print(f"report: {out / 'report.md'} (plots: {out / 'scores.png'}, {out / 'accuracy.png'})")
    return 0 if delivery["missing"] == 0 and holder.get("rc") == 0 else 1


def _wait_for_labels(registry, sent: int, timeout_s: float) -> None:
    """Until the service has handled every feedback record sent (or the timeout)."""
    if registry is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        handled = sum(
            registry.get_sample_value("adae_feedback_records_total", {"result": r}) or 0.0 for r in FEEDBACK_RESULTS
        )
        if handled >= sent:
            return
        time.sleep(0.2)


def _delivery_check(bootstrap: str, kafka: KafkaConfig, produced: set[str]) -> dict:
    from collections import Counter

    from adae_stream.stream.clients import plain_reader
    from adae_stream.stream.codecs import decode_response

    c = plain_reader(kafka, bootstrap, kafka.output_topic)
    counts: Counter = Counter()
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 2.0:
        polled = c.poll(timeout_ms=300)
        for records in polled.values():
            idle_since = time.monotonic()
            for rec in records:
                counts[decode_response(rec.value, rec.headers)["id"]] += 1
    c.close()
    mine = {k: v for k, v in counts.items() if k in produced}
    return {
        "produced": len(produced),
        "answered": len(mine),
        "missing": len(produced - set(mine)),
        "duplicates": sum(v - 1 for v in mine.values()),
    }
