"""One-line mistakes a maintainer could make in the record path, the feedback join and its journal, the
ledger, the sink's handling of rejections, and the decision-maker; and whether the fast tests catch each.

    .venv/bin/python -m tests.mutations          # every mutation against tests/fast/ (about a minute each)
    .venv/bin/python -m tests.mutations --quick  # against the test files of those parts (seconds each)
    .venv/bin/python -m tests.mutations --quick --module changes/  # one part's mutations only

Each mutation replaces one text in one module of adae_stream/, runs the tests, and puts the file back.
Only failing tests count as caught (pytest's exit status 1). A mutation the tests pass is MISSED; one that
stops them from running at all (an import or collection error, any other exit status) is INVALID, since
it says nothing about the tests; a mutation whose text is no longer once in its module is STALE (the code
moved). Any of the three makes the exit status 1: add a test that names the behaviour, or fix the
mutation, then run this again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "adae_stream/"
QUICK = [
    "tests/fast/test_record_path.py",
    "tests/fast/test_sink.py",
    "tests/fast/test_repository.py",
    "tests/fast/test_feedback_join.py",
    "tests/fast/test_routing.py",
    "tests/fast/test_rebalance_paths.py",
    "tests/fast/test_evidence_faults.py",
    "tests/fast/test_ledger_reader.py",
    "tests/fast/test_decider.py",
    "tests/fast/test_decider_crashes.py",
    "tests/fast/test_demo_decider.py",
    "tests/fast/test_change_detection.py",
    "tests/fast/test_json_text.py",
    "tests/fast/test_tensorflow_engine.py",
    "tests/fast/test_compile_choice.py",
    "tests/fast/test_codecs.py",
    "tests/fast/test_sequential.py",
]

# (what it breaks, module under adae_stream/, the text, its replacement)
MUTATIONS: list[tuple[str, str, str, str]] = [
    (
        "a scoring failure no longer dead-lettered",
        "stream/record_path.py",
        'self.sink.dead_letter(req.record, "scoring"',
        'self.sink.settle(req.record, "scoring"',
    ),
    ("a failed batch's requests stay in the assembler", "stream/record_path.py", "lane.assembler.discard(req)", "pass"),
    (
        "flagged-sample selection inverted",
        "stream/record_path.py",
        ">= self.cfg.flagged.sample_rate:",
        "< self.cfg.flagged.sample_rate:",
    ),
    (
        "flagged captures not truncated",
        "stream/record_path.py",
        "keep = flagged[: self.cfg.flagged.max_instances]",
        "keep = flagged",
    ),
    ("truncated captures not marked", "stream/record_path.py", "if flagged.size > keep.size:", "if False:"),
    (
        "publish: flagged publishes every answer",
        "stream/record_path.py",
        'if self.kafka.publish != "answers":',
        "if False:",
    ),
    (
        "publish: nothing publishes flagged requests",
        "stream/record_path.py",
        'if self.kafka.publish == "nothing" or flagged.size == 0:',
        "if flagged.size == 0:",
    ),
    (
        "the shadow never reaches the shadow topic",
        "stream/record_path.py",
        "self.sink.copy(shadow_topic, req.record, value, [], self.metrics.shadow_published, key=key)",
        "pass",
    ),
    (
        "the shadow's figures reported as serving",
        "stream/record_path.py",
        'self.metrics.observe_detector(lane.name, version, "shadow"',
        'self.metrics.observe_detector(lane.name, version, "serving"',
    ),
    (
        "the shadow answers in place of the serving version",
        "stream/record_path.py",
        "result = detector.scorer(batch.x)",
        "result = (detector.shadow or detector.scorer)(batch.x)",
    ),
    (
        "unrouted records dead-lettered",
        "stream/record_path.py",
        'self.sink.settle(raw, "skipped", "unrouted")',
        'self.sink.dead_letter(raw, "decode", "unrouted")',
    ),
    (
        "a swap no longer drains the lane",
        "stream/record_path.py",
        "drain=lambda lane: self.score_lane(lane, force=True)",
        "drain=lambda lane: None",
    ),
    (
        "a swap drains without forcing the held part",
        "stream/record_path.py",
        "drain=lambda lane: self.score_lane(lane, force=True)",
        "drain=lambda lane: self.score_lane(lane, force=False)",
    ),
    (
        "an empty request never answered",
        "stream/record_path.py",
        "if req.n == 0:  # nothing to score",
        "if req.n < 0:  # nothing to score",
    ),
    (
        "held labels never decided",
        "stream/label_path.py",
        "self._write(self.join.settle(placed))",
        "self._write([])",
    ),
    (
        "a held label settled before it is decided",
        "stream/label_path.py",
        "self._write(self.join.submit(label))",
        'self.join.submit(label)\n        self.sink.settle(raw, "feedback")',
    ),
    (
        "a decoder bug stops the service",
        "stream/record_path.py",
        "except Exception as exc:  # a decoder bug",
        "except ValueError as exc:  # a decoder bug",
    ),
    (
        "held labels and decisions of a partition no longer ours are kept",
        "stream/label_path.py",
        "self.join.forget_partition(topic, partition)",
        "pass",
    ),
    (
        "labels no longer reach the join",
        "stream/record_path.py",
        "self.labels.ingest(raw)",
        "pass",
    ),
    (
        "a label unknown before the tail read past it",
        "feedback/join.py",
        "elif placed is not None and placed(label.arrival_s):",
        "elif placed is not None:",
    ),
    (
        "a label joined twice after a redelivered answer",
        "feedback/join.py",
        "answer.labelled, answer.shadow = old.labelled, old.shadow",
        "pass",
    ),
    (
        "a shadow read before its answer is lost",
        "feedback/join.py",
        "if shadow is not None and len(shadow.corrected) == answer.n:",
        "if False:",
    ),
    (
        "a settled record's offset never committable",
        "stream/sink.py",
        "self.tracker.done(TopicPartition(rec.topic, rec.partition), rec.offset)\n"
        "        self.outcomes.request_done(status",
        "self.outcomes.request_done(status",
    ),
    ("the answer limit not checked", "stream/sink.py", "if size > self.answer_limit:", "if False:"),
    ("lanes never switch version", "stream/lanes.py", "lane.take_over(new)", "pass"),
    ("routes by model ignored", "stream/routing.py", "if model is not None and model in serving:", "if False:"),
    (
        "the batcher ignores max_batch_size",
        "stream/batcher.py",
        "stop = min(req.n, start + self.max_batch_size - filled)",
        "stop = req.n",
    ),
    (
        "a scoring failure stops the service",
        "stream/record_path.py",
        "self._scoring_failed(lane, batch, exc)\n",
        "raise\n",
    ),
    (
        "answers publish the corrected prediction whatever the policy says",
        "stream/record_path.py",
        "fields = {PREDICTION: result[detector.publish],",
        "fields = {PREDICTION: result[CORRECTED],",
    ),
    ("a new published choice does not drain the lane", "stream/lanes.py", "lane.detector.publish,\n", "new.publish,\n"),
    (
        "a label's evidence never reaches the ledger",
        "stream/label_path.py",
        "if topic is None or not outcome.evidence:",
        "if True:",
    ),
    (
        "a label is done before the broker has its evidence",
        "stream/sink.py",
        'self._send(topic, key, value, [], _Delivery(rec, status="feedback"))',
        "self.tracker.done(TopicPartition(rec.topic, rec.partition), rec.offset)\n"
        '        self._send(topic, key, value, [], _Delivery(rec, status="feedback"))',
    ),
    # the join's decisions, in order per partition and scoped to the commit (feedback/join.py, journal.py)
    ("a label jumps the labels held before it", "feedback/join.py", "queue.append(label)", "queue.appendleft(label)"),
    (
        "a redone partition's held labels are kept",
        "feedback/join.py",
        "dropped = self._pending.pop((topic, partition), deque())",
        "dropped = deque()",
    ),
    (
        "an aborted label's marks stay (its redo is a duplicate)",
        "feedback/journal.py",
        "entry.marks[entry.new] = False",
        "pass",
    ),
    (
        "an outcome counted before its record is committed",
        "feedback/journal.py",
        "final += [e.outcome for e in entries if e.offset < upto]",
        "final += [e.outcome for e in entries if e.offset <= upto]",
    ),
    (
        "the join's decisions never take effect with the commit",
        "stream/app.py",
        "self.tracker.on_committed(join.journal.commit)",
        "pass",
    ),
    # the ledger and its reader (feedback/ledger.py, ledger_reader.py)
    (
        "a ledger row's counts read in another order",
        "feedback/ledger.py",
        "Counts(*row[4:])) for row in rows]",
        "Counts(*reversed(row[4:]))) for row in rows]",
    ),
    (
        "a restarted reader counts the ledger from its start again",
        "feedback/ledger_reader.py",
        "consumer.seek(tp, self._totals.offsets[tp.partition])",
        "consumer.seek_to_beginning(tp)",
    ),
    # rejections (stream/doom.py, sink.py)
    (
        "a condemned record is forgotten after its first redo (the rejection loop)",
        "stream/doom.py",
        "return self._condemned.get(source)",
        "return self._condemned.pop(source, None)",
    ),
    (
        "only the first rejection of a window is condemned",
        "stream/doom.py",
        "or any(exc is seen for seen in self._seen)",
        "or bool(self._seen)",
    ),
    (
        "kafka-python's failing flush stops the commit",
        "stream/sink.py",
        "except KafkaError as exc:\n                log.debug",
        "except ZeroDivisionError as exc:\n                log.debug",
    ),
    # the decision-maker (decisions/)
    ("a rolled-back version is promoted again", "decisions/decider.py", "if shadow in ds.rejected:", "if False:"),
    (
        "the intent is not saved before the policies",
        "decisions/service.py",
        "        if writes:\n            save_state(root, state)",
        "        if writes:\n            pass",
    ),
    (
        "a policy never written is taken as written after a crash",
        "decisions/state.py",
        "if digest(policy_text(root / name)) == before:",
        "if False:",
    ),
    (
        "two checks run at once",
        "decisions/service.py",
        "        with self._checking:\n            skipped",
        "        if True:\n            skipped",
    ),
    (
        "a failed write leaves the state as if it had been written",
        "decisions/service.py",
        "        if state.intent is not None:\n            settle_intent(root, state)",
        "        if False:\n            settle_intent(root, state)",
    ),
    (
        "a check that fails is not counted",
        "decisions/service.py",
        "self.metrics.check_failures.labels(type(exc).__name__).inc()",
        "pass",
    ),
    (
        "correction's harm never switches the published prediction",
        "decisions/rules.py",
        'decision = "no_defense"',
        "decision = None",
    ),
    # the change detectors (issue 39)
    ("the ARL's up step never leaves the chart", "changes/cusum.py", "band[0, stays + up] -= p", "pass"),
    ("the chart never clips at 0", "changes/cusum.py", "        if s <= 0:\n", "        if s < -10**9:\n"),
    (
        "the threshold one state short of its ARL",
        "changes/cusum.py",
        "return Design(p0, p1, up, down, unit, lo, arl(p0, up, down, lo))",
        "return Design(p0, p1, up, down, unit, lo - 1, arl(p0, up, down, lo))",
    ),
    (
        "the baseline designs for the estimate",
        "changes/charts.py",
        "rates = {e: upper_bound(k, b.items, self.confidence)",
        "rates = {e: k / b.items",
    ),
    ("flags take the whole budget", "changes/charts.py", '"flags": 0.5,', '"flags": 2.0,'),
    (
        "a restart forgets the offsets",
        "changes/service.py",
        '            self.offsets = {int(p): int(o) for p, o in d["offsets"].items()}',
        "            pass",
    ),
    (
        "no summary for a shadow",
        "stream/record_path.py",
        '        self._summarize(lane.name, version, "shadow", scorer, batch, shadow)',
        "        pass",
    ),
    (
        "summaries count above the upper quartile as low",
        "feedback/summaries.py",
        "np.count_nonzero(scores < edges[0])",
        "np.count_nonzero(scores > edges[1])",
    ),
    (
        "the switch back counts the wrong side",
        "decisions/rules.py",
        'wins, losses = (b, c) if detector["publish"] == "no_defense" else (c, b)',
        "wins, losses = (c, b)",
    ),
    (
        "the switch back never restarts",
        "decisions/sequential.py",
        "    return np.maximum(0.0, s).tolist()",
        "    return s.tolist()",
    ),
    (
        "a lone request waits for its batch to fill",
        "stream/app.py",
        "drained = read < self.kafka.max_poll_records",
        "drained = False",
    ),
    (
        "a full poll dispatches before the rest is read",
        "stream/app.py",
        "drained = read < self.kafka.max_poll_records",
        "drained = True",
    ),
    (
        "exactly_once never commits when idle",
        "stream/commit.py",
        "if self.interval.due(force or (quiet and self.holds_unpublished)):",
        "if self.interval.due(force):",
    ),
    (
        "a transaction commits past a request held in another lane",
        "stream/commit.py",
        "no scoring there\n            self.before_commit()",
        "no scoring there\n            pass",
    ),
    (
        "an aborted transaction's summaries are sent with the redo's",
        "stream/commit.py",
        "        self.after_abort()\n",
        "        pass\n",
    ),
    (
        "folded summaries lose a batch's classes",
        "feedback/summaries.py",
        "        classes[label] = classes.get(label, 0) + count",
        "        classes[label] = count",
    ),
    (
        "JSON that orjson refuses is refused, not read by the standard library",
        "codecs/json_text.py",
        "        return json.loads(bytes(value) if isinstance(value, memoryview) else value)",
        "        raise",
    ),
    (
        "answers that orjson cannot write are lost",
        "codecs/json_text.py",
        '        return json.dumps(body, separators=(",", ":")).encode()',
        "        raise",
    ),
    (
        "the TF engine's flat entry trusted without its check",
        "detector/engines/tensorflow_engine.py",
        "    if _flat_entry_agrees() and",
        "    if",
    ),
    (
        "jit_compile auto keeps trying XLA on larger buckets after it lost",
        "detector/scorer.py",
        "                    trying = won  #",
        "                    trying = True  #",
    ),
    (
        "jit_compile auto takes XLA on a tie",
        "detector/compile_choice.py",
        "< (1.0 - margin) * statistics.median(times_first)",
        "<= statistics.median(times_first)",
    ),
    (
        "jit_compile auto counts the calls right after the compile",
        "detector/compile_choice.py",
        "    return times_first[1:], times_second[1:]",
        "    return times_first, times_second",
    ),
    (
        "jit_compile auto times every version again",
        "detector/scorer.py",
        "known = REMEMBERED.get(key) if self._alternative is not None else None",
        "known = None",
    ),
    (
        "jit_compile auto reuses a choice across architectures",
        "detector/scorer.py",
        "key = (self._architecture, shape, sizes)",
        "key = ((), shape, sizes)",
    ),
]


def run(paths: list[str]) -> str:
    """'caught' when tests fail, 'MISSED' when they pass, 'INVALID' when they could not run (pytest's exit
    status 2-5: an import or collection error, an internal error, no tests)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {0: "MISSED", 1: "caught"}.get(out.returncode, "INVALID")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutations")
    ap.add_argument("--quick", action="store_true", help="run the mutated parts' own test files, not all of tests/fast")
    ap.add_argument("--module", help="only the mutations of modules under adae_stream/ whose path contains this")
    ap.add_argument("--tests", help="these test files (comma-separated) instead")
    args = ap.parse_args(argv)
    paths = QUICK if args.quick else ["tests/fast", "-n", "auto", "--maxprocesses", "4"]
    if args.tests:
        paths = args.tests.split(",")
    chosen = [m for m in MUTATIONS if args.module is None or args.module in m[1]]
    failed = 0
    for what, module, old, new in chosen:
        path = ROOT / PACKAGE / module
        text = path.read_text()
        if text.count(old) != 1:
            print(f"STALE   {what}: {old!r} is not once in {module}")
            failed += 1
            continue
        try:
            path.write_text(text.replace(old, new))
            verdict = run(paths)
        finally:
            path.write_text(text)
        print(f"{verdict:7} {what}")
        failed += verdict != "caught"
    print(f"{len(chosen) - failed} of {len(chosen)} caught")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
