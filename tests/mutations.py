"""One-line mistakes a maintainer could make in the record path, and whether the fast tests catch each.

    .venv/bin/python -m tests.mutations          # every mutation against tests/fast/ (about a minute each)
    .venv/bin/python -m tests.mutations --quick  # against the record path's own test files (seconds each)

Each mutation replaces one line's text in one module, runs the tests, and puts the file back. A mutation
the tests do not catch is printed as MISSED and the exit status is 1: add a test that names the behaviour,
then run this again. A mutation whose text is no longer in its module is reported as STALE (the code
moved): update it here rather than dropping it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STREAM = "adae_stream/stream/"
QUICK = [
    "tests/fast/test_record_path.py",
    "tests/fast/test_sink.py",
    "tests/fast/test_repository.py",
    "tests/fast/test_feedback_join.py",
    "tests/fast/test_routing.py",
    "tests/fast/test_rebalance_paths.py",
]

# (what it breaks, module, the text, its replacement)
MUTATIONS: list[tuple[str, str, str, str]] = [
    (
        "a scoring failure no longer dead-lettered",
        "record_path.py",
        'self.sink.dead_letter(req.record, "scoring"',
        'self.sink.settle(req.record, "scoring"',
    ),
    ("a failed batch's requests stay in the assembler", "record_path.py", "lane.assembler.discard(req)", "pass"),
    (
        "flagged-sample selection inverted",
        "record_path.py",
        ">= self.cfg.flagged.sample_rate:",
        "< self.cfg.flagged.sample_rate:",
    ),
    (
        "flagged captures not truncated",
        "record_path.py",
        "keep = flagged[: self.cfg.flagged.max_instances]",
        "keep = flagged",
    ),
    ("truncated captures not marked", "record_path.py", "if flagged.size > keep.size:", "if False:"),
    ("publish: flagged publishes every answer", "record_path.py", 'if self.kafka.publish != "answers":', "if False:"),
    (
        "publish: nothing publishes flagged requests",
        "record_path.py",
        'if self.kafka.publish == "nothing" or flagged.size == 0:',
        "if flagged.size == 0:",
    ),
    (
        "the shadow never reaches the shadow topic",
        "record_path.py",
        "self.sink.copy(shadow_topic, req.record, value, [], self.metrics.shadow_published, key=key)",
        "pass",
    ),
    (
        "the shadow's figures reported as serving",
        "record_path.py",
        'self.metrics.observe_detector(lane.name, version, "shadow"',
        'self.metrics.observe_detector(lane.name, version, "serving"',
    ),
    (
        "the shadow answers in place of the serving version",
        "record_path.py",
        "result = detector.scorer(batch.x)",
        "result = (detector.shadow or detector.scorer)(batch.x)",
    ),
    (
        "unrouted records dead-lettered",
        "record_path.py",
        'self.sink.settle(raw, "skipped", "unrouted")',
        'self.sink.dead_letter(raw, "decode", "unrouted")',
    ),
    (
        "a swap no longer drains the lane",
        "record_path.py",
        "drain=lambda lane: self.score_lane(lane, force=True)",
        "drain=lambda lane: None",
    ),
    (
        "a swap drains without forcing the held part",
        "record_path.py",
        "drain=lambda lane: self.score_lane(lane, force=True)",
        "drain=lambda lane: self.score_lane(lane, force=False)",
    ),
    (
        "an empty request never answered",
        "record_path.py",
        "if req.n == 0:  # nothing to score",
        "if req.n < 0:  # nothing to score",
    ),
    (
        "held labels never decided",
        "record_path.py",
        "for raw, outcome in self.join.settle(placed):",
        "for raw, outcome in []:",
    ),
    (
        "a held label settled before it is decided",
        "record_path.py",
        "if outcome is not None:\n            self._label_done(raw, outcome)",
        'if True:\n            self.sink.settle(raw, "feedback")',
    ),
    (
        "a decoder bug stops the service",
        "record_path.py",
        "except Exception as exc:  # a decoder bug",
        "except ValueError as exc:  # a decoder bug",
    ),
    (
        "held labels of a revoked partition are still decided",
        "record_path.py",
        "self.join.drop_pending(lambda raw: raw.topic == topic and raw.partition == partition)",
        "pass",
    ),
    (
        "labels no longer reach the join",
        "record_path.py",
        "outcome = join.submit(request_id, labels, raw)",
        "outcome = None",
    ),
    (
        "a label unknown before the tail read past it",
        "feedback.py",
        "if outcome is None and placed(item.arrival_s):",
        "if outcome is None:",
    ),
    (
        "a label joined twice after a redelivered answer",
        "feedback.py",
        "answer.labelled, answer.shadow = old.labelled, old.shadow",
        "pass",
    ),
    (
        "a shadow read before its answer is lost",
        "feedback.py",
        "if shadow is not None and len(shadow.corrected) == answer.n:",
        "if False:",
    ),
    (
        "a settled record's offset never committable",
        "sink.py",
        "self.tracker.done(TopicPartition(rec.topic, rec.partition), rec.offset)\n"
        "        self.outcomes.request_done(status",
        "self.outcomes.request_done(status",
    ),
    ("the answer limit not checked", "sink.py", "if size > self.answer_limit:", "if False:"),
    ("lanes never switch version", "lanes.py", "lane.take_over(new)", "pass"),
    ("routes by model ignored", "routing.py", "if model is not None and model in serving:", "if False:"),
    (
        "the batcher ignores max_batch_size",
        "batcher.py",
        "stop = min(req.n, start + self.max_batch_size - filled)",
        "stop = req.n",
    ),
    ("a scoring failure stops the service", "record_path.py", "self._scoring_failed(lane, batch, exc)\n", "raise\n"),
    (
        "answers publish the corrected prediction whatever the policy says",
        "record_path.py",
        "fields = {PREDICTION: result[detector.publish],",
        "fields = {PREDICTION: result[CORRECTED],",
    ),
    ("a new published choice does not drain the lane", "lanes.py", "lane.detector.publish,\n", "new.publish,\n"),
    (
        "a label's evidence never reaches the ledger",
        "record_path.py",
        "if topic is None or not outcome.evidence:",
        "if True:",
    ),
    (
        "a label is done before the broker has its evidence",
        "sink.py",
        'self._send(topic, key, value, [], _Delivery(rec, status="feedback"))',
        "self.tracker.done(TopicPartition(rec.topic, rec.partition), rec.offset)\n"
        '        self._send(topic, key, value, [], _Delivery(rec, status="feedback"))',
    ),
]


def run(paths: list[str]) -> bool:
    """True when the tests fail (the mutation is caught)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out.returncode != 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutations")
    ap.add_argument("--quick", action="store_true", help="run the record path's own test files, not all of tests/fast")
    args = ap.parse_args(argv)
    paths = QUICK if args.quick else ["tests/fast", "-n", "auto", "--maxprocesses", "4"]
    missed = 0
    for what, module, old, new in MUTATIONS:
        path = ROOT / STREAM / module
        text = path.read_text()
        if text.count(old) != 1:
            print(f"STALE   {what}: {old!r} is not once in {module}")
            missed += 1
            continue
        try:
            path.write_text(text.replace(old, new))
            caught = run(paths)
        finally:
            path.write_text(text)
        print(f"{'caught' if caught else 'MISSED'}  {what}")
        missed += not caught
    print(f"{len(MUTATIONS) - missed} of {len(MUTATIONS)} caught")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
