"""The demo's control plane: its detector served from a repository of one version, and the decision-maker
(the code of ``adae-stream decide``) on a thread, deciding from this run's labels what answers publish."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from adae_stream.config import Config
from adae_stream.decisions.decider import Decision
from adae_stream.feedback.ledger_reader import LedgerReader

DEMO_DETECTOR = "digits"
STOP_WAIT_S = 15.0  # a check under way ends within its ledger read (10 s) and its writes


def repository_config(cfg: Config, detector_dir: Path, input_topic: str) -> Config:
    """The demo's repository, made anew in the report directory (its policy.yaml and the decision-maker's
    state are this run's), with the cached detector as version 1 and the input topic routed to it."""
    root = Path(cfg.demo.report_dir).resolve() / "repository"
    shutil.rmtree(root, ignore_errors=True)
    (root / DEMO_DETECTOR).mkdir(parents=True)
    (root / DEMO_DETECTOR / "1").symlink_to(detector_dir.resolve(), target_is_directory=True)
    cfg = cfg.model_copy(deep=True)
    cfg.detector.path = None
    cfg.detector.repository = str(root)
    cfg.detector.routes = [{"detector": DEMO_DETECTOR, "topic": f"^{re.escape(input_topic)}$"}]
    cfg.detector.poll_s = min(cfg.detector.poll_s, 1.0)  # a decision reaches the answers within a second
    cfg.decisions.interval_s = min(cfg.decisions.interval_s, 1.0)
    return cfg


class DemoDecider(threading.Thread):
    """DecisionService.run on a thread; ``decided`` holds each decision with its time since ``start``. Its
    series go to ``registry`` (the demo's /metrics) when there is one; failed checks are counted and
    logged with their cause there (DecisionService.check_or_log), and where the tests stand at the end is
    in ``summary`` and the report, so a run without a decision says why."""

    def __init__(
        self, cfg: Config, bootstrap: str, registry: CollectorRegistry | None = None, reader: LedgerReader | None = None
    ) -> None:
        """reader: the ledger's (a read_committed reader of the run's evidence topic unless given)."""
        super().__init__(name="adae-demo-decide", daemon=True)
        from adae_stream.decisions.metrics import DecisionMetrics
        from adae_stream.decisions.service import DecisionService

        self.metrics = DecisionMetrics(registry if registry is not None else CollectorRegistry())
        self.service = DecisionService(cfg, bootstrap, self.metrics, reader)
        self.service.reader.skip_to_end(self.service.state.totals)  # this run's evidence only (a used broker)
        self.stop_event = threading.Event()
        self.start_time = time.monotonic()
        self.decided: list[tuple[float, Decision]] = []

    def run(self) -> None:
        self.service.run(self.stop_event, self._record)

    def _record(self, decisions: list[Decision]) -> None:
        self.decided += [(time.monotonic() - self.start_time, d) for d in decisions]

    def stop(self) -> None:
        """After one last check, so the last labels' evidence counts too; it runs once the thread's check
        under way has ended (the service runs one check at a time)."""
        self.stop_event.set()
        self.join(STOP_WAIT_S)
        self.service.check_or_log(self._record)
        self.service.close()

    def failed_checks(self) -> dict[str, float]:
        registry = self.metrics.registry
        return {
            s.labels["error"]: s.value
            for metric in registry.collect()
            if metric.name == "adae_decision_check_failures"
            for s in metric.samples
            if s.name.endswith("_total")
        }

    def summary(self) -> list[dict]:
        """Each decision for the report: when, what, and on what evidence."""
        out = []
        for at_s, d in self.decided:
            entry = {"at_s": round(at_s, 1), "decision": d.decision, "detail": d.detail}
            if d.verdict is not None:
                p = d.verdict.pairs
                entry |= {"b": p.b, "c": p.c, "m": p.m, "alpha": d.verdict.alpha, "e_values": d.verdict.e_values}
            out.append(entry)
        return out

    def standing(self) -> dict:
        """Where the tests stood at the end, and the checks that failed (by exception type)."""
        return {"tests": self.service.decider.standing(), "failed_checks": self.failed_checks()}
