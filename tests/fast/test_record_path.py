"""The record path as the service runs it (decode -> route -> lane -> batch -> score -> answer -> capture ->
shadow -> join), with no broker and no TensorFlow.

Everything here is the real code, driven by the Pipeline's own loop step (tests/loop_harness.py): the
loop, RecordPath, Lanes, the batcher, the codecs, Sink, the committers and the feedback join. What stands
in: a scorer whose results follow a formula the tests recompute on their own (it can also raise or be
slow), the Kafka clients (tests/stand_ins.py: the client seam on an in-memory log), and metrics that
record every call. Each test names the behaviour it protects. The broker tests (tests/broker/) run the same path
through real processes; these catch a one-line mistake in seconds (README, "Tests": how to check that).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from kafka.errors import MessageSizeTooLargeError
from kafka.structs import TopicPartition

from adae_stream.codecs import INSTANCE_INDEX, decode_response, encode_request
from adae_stream.errors import DEAD_LETTER_REASONS, ERROR_POLICY, SKIP_KINDS
from adae_stream.feedback.ledger import decode_evidence
from adae_stream.feedback.summaries import decode_summary
from adae_stream.scoring import ServingDetector
from adae_stream.stream import record_path as record_path_module
from adae_stream.stream import sink as sink_module
from tests.loop_harness import Harness, Source, StubScorer, expected, instances


def test_an_answer_carries_the_scorer_results_for_its_instances_and_settles_its_offset():
    h = Harness()
    x = instances([0.1, 0.9, 0.7, 0.2], first_class=1)
    h.request(x, "r1")
    h.turn()
    (answer,) = h.answers()
    want = expected(x)
    assert answer["id"] == "r1"
    for field in ("corrected", "is_adversarial", "no_defense", "defense"):
        np.testing.assert_array_equal(answer[field], want[field], err_msg=field)
    np.testing.assert_allclose(answer["instance_score"], want["instance_score"])
    assert h.statuses() == [("ok", None)] and h.dead_letters() == [] and h.all_settled()


def test_a_lone_request_is_scored_at_once_and_batches_fill_only_from_what_is_buffered():
    """Natural batching (the default): nothing waits for a batch to fill while the consumer is idle; a
    poll that comes back full (more is buffered) lets the batch fill from the next poll instead."""
    h = Harness(batching={"max_batch_size": 8, "max_batch_delay_ms": 60_000}, kafka={"max_poll_records": 3})
    (scorer,) = [lane.detector.scorer for lane in h.path.lanes]
    h.request(instances([0.1, 0.2]), "lone")
    h.turn(force=False)
    assert [len(b) for b in scorer.batches] == [2]  # the wait of 60 s does not apply: nothing else came
    assert [a["id"] for a in h.answers()] == ["lone"]
    for i in range(5):
        h.request(instances([0.3]), f"r{i}")
    h.turn(force=False)  # 3 of 5 read: the poll was full, so more is buffered
    assert [len(b) for b in scorer.batches] == [2]
    h.turn(force=False)  # the last 2: nothing more buffered, the 5 go as one batch
    assert [len(b) for b in scorer.batches] == [2, 5]
    assert [a["id"] for a in h.answers()] == ["lone", *(f"r{i}" for i in range(5))] and h.all_settled()


def test_fixed_batching_scores_only_when_due_unless_forced():
    h = Harness(batching={"max_batch_size": 8, "max_batch_delay_ms": 60_000, "dispatch_when_idle": False})
    (scorer,) = [lane.detector.scorer for lane in h.path.lanes]
    h.request(instances([0.1, 0.2]), "r1")
    h.turn(force=False)
    assert scorer.batches == [] and h.answers() == []  # neither full nor late: it waits
    h.request(instances([0.1] * 6), "r2")  # 8 instances: a full batch is due at once
    h.turn(force=False)
    assert [len(b) for b in scorer.batches] == [8] and [a["id"] for a in h.answers()] == ["r1", "r2"]


def test_a_request_split_across_batches_is_answered_once_whole_and_in_order():
    h = Harness(batching={"max_batch_size": 4})
    (scorer,) = [lane.detector.scorer for lane in h.path.lanes]
    x1, x2 = instances([0.9, 0.1, 0.6]), instances([0.2] * 7 + [0.8] * 3, first_class=2)
    h.request(x1, "r1")
    h.request(x2, "r2")
    h.turn()
    assert [len(b) for b in scorer.batches] == [4, 4, 4, 1]
    a1, a2 = h.answers()
    assert (a1["id"], a2["id"]) == ("r1", "r2")
    np.testing.assert_array_equal(a1["corrected"], expected(x1)["corrected"])
    np.testing.assert_array_equal(a2["corrected"], expected(x2)["corrected"])
    np.testing.assert_array_equal(a2["is_adversarial"], expected(x2)["is_adversarial"])
    assert h.all_settled()


def test_an_empty_request_is_answered_at_once_without_scoring():
    h = Harness()
    (scorer,) = [lane.detector.scorer for lane in h.path.lanes]
    h.request(np.zeros((0, 2), np.float32), "empty")
    h.turn()
    (answer,) = h.answers()
    assert answer["id"] == "empty" and len(answer["corrected"]) == 0 and scorer.batches == []


def test_a_slow_scorer_is_timed_and_its_batch_still_answered():
    h = Harness(detectors=StubScorer(delay_s=0.05))
    h.request(instances([0.1, 0.9]), "r1")
    h.turn()
    ((n, seconds),) = h.metrics.calls["observe_batch"]
    assert n == 2 and seconds >= 0.05  # the batch latency metric holds the scorer's own time
    assert [a["id"] for a in h.answers()] == ["r1"]


# ---------------------------------------------------------------- the error policy, row by row
def _nan() -> np.ndarray:
    x = instances([0.1, 0.2])
    x[1, 0] = np.nan
    return x


# Each case: a record, and the dead-letter reason (or skip kind) it must end with. Every dead-letter reason
# of ERROR_POLICY is here (test_every_record_row_of_the_error_policy_has_a_case checks it).
RECORD_CASES = {
    "decode": (b"\x00\x01 not a request", []),
    "schema": (b'{"id": "r", "inputs": "no list"}', [("content-type", b"application/json")]),
    "shape": encode_request(np.zeros((2, 3), np.float32), "v2", "wrong-width"),
    "dtype": (
        b'{"id":"r","inputs":[{"name":"x","shape":[1,2],"datatype":"BYTES","data":["a","b"]}]}',
        [("content-type", b"application/json")],
    ),
    "non_finite": encode_request(_nan(), "npy", "nan"),
    "too_large": encode_request(np.zeros((1000, 2), np.float32), "v2", "big"),  # 8 kB, over the 4 kB limit
}


@pytest.mark.parametrize("reason", sorted(RECORD_CASES))
def test_a_record_that_is_not_a_valid_request_is_dead_lettered_with_its_reason(reason):
    h = Harness(kafka={"max_message_bytes": 4096})
    value, headers = RECORD_CASES[reason]
    h.send(value, headers)
    h.request(instances([0.1]), "good")  # the next record is answered as usual
    h.turn()
    assert h.dead_letters() == [reason] and [a["id"] for a in h.answers()] == ["good"]
    assert h.statuses() == [("dead_letter", reason), ("ok", None)] and h.all_settled()


def test_a_scorer_that_raises_dead_letters_every_request_of_its_batch_and_nothing_else():
    h = Harness(detectors=StubScorer(fail_on=0.25), batching={"max_batch_size": 4})
    h.request(instances([0.1, 0.1, 0.1]), "before")  # batch 1: [before x3, doomed x1]
    h.request(instances([0.3, 0.3, 0.25, 0.3, 0.3]), "doomed")  # its 2nd batch [x4] fails
    h.request(instances([0.7]), "after")  # batch 3: [after]
    h.turn()
    assert [a["id"] for a in h.answers()] == ["before", "after"]
    assert h.dead_letters() == ["scoring"]  # once, though its first part was scored
    dl = h.to("dead-letter")[0]
    assert b"RuntimeError: the scorer broke" in dict(dl["headers"])["error-message"]
    assert sorted(h.statuses()) == [("dead_letter", "scoring"), ("ok", None), ("ok", None)] and h.all_settled()
    lane = next(iter(h.path.lanes))
    assert len(lane.batcher) == 0 and len(lane.assembler) == 0  # nothing of it left to answer later


def test_a_scorer_that_always_raises_costs_each_record_not_the_service():
    h = Harness(detectors=StubScorer(raises=True))
    for i in range(3):
        h.request(instances([0.1, 0.2]), f"r{i}")
    h.turn()
    assert h.dead_letters() == ["scoring"] * 3 and h.answers() == [] and h.sink.failure is None and h.all_settled()


def test_an_answer_that_cannot_be_encoded_is_dead_lettered(monkeypatch):
    def unencodable(*args, **kwargs):  # the decoders refuse ids no answer can carry, so a codec fails here
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(sink_module, "encode", unencodable)
    h = Harness()
    h.request(instances([0.1]), "r1")
    h.turn()
    assert h.dead_letters() == ["encode"] and h.answers() == [] and h.all_settled()


def test_an_answer_over_the_output_limit_is_dead_lettered():
    h = Harness(kafka={"max_message_bytes": 4096})
    h.request(instances([0.1] * 150), "many", fmt="npy")  # 1.3 kB of request, a 4.4 kB npy answer
    h.turn()
    assert h.dead_letters() == ["answer_too_large"] and h.all_settled()


def test_an_answer_the_client_refuses_is_dead_lettered_as_rejected():
    h = Harness()
    h.broker.raise_at_send["out"] = MessageSizeTooLargeError("record too large")
    h.request(instances([0.1]), "r1")
    h.turn()
    assert h.dead_letters() == ["rejected"] and h.all_settled()


def test_a_decoder_bug_is_dead_lettered_as_internal(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(record_path_module, "decode", broken)
    h = Harness()
    h.request(instances([0.1]), "r1")
    h.turn()
    assert h.dead_letters() == ["internal"] and h.all_settled()


def test_responses_sharing_the_topic_are_skipped_not_dead_lettered():
    h = Harness()
    h.send(b'{"id": "r", "outputs": [{"name": "y", "shape": [1], "datatype": "INT64", "data": [1]}]}')
    h.turn()
    assert h.statuses() == [("skipped", "json_response")] and h.topics() == [] and h.all_settled()


def test_every_record_row_of_the_error_policy_has_a_case():
    covered = {
        *RECORD_CASES,
        "scoring",
        "encode",
        "answer_too_large",
        "rejected",
        "internal",
    }
    record_rows = [row for row in ERROR_POLICY if row.reasons]
    assert {r for row in record_rows for r in row.reasons} == covered == set(DEAD_LETTER_REASONS)
    assert {"json_response", "unrouted"} <= set(SKIP_KINDS)  # the skip kinds the path itself decides


# ---------------------------------------------------------------- publish modes and flagged captures
def _mixed(h: Harness) -> None:
    h.request(instances([0.1, 0.2]), "clean")
    h.request(instances([0.1, 0.9, 0.2, 0.8]), "attacked")


def test_publish_answers_answers_every_request():
    h = Harness(kafka={"publish": "answers"})
    _mixed(h)
    h.turn()
    assert [a["id"] for a in h.answers()] == ["clean", "attacked"] and h.all_settled()


def test_publish_flagged_sends_only_the_flagged_instances_of_flagged_requests():
    h = Harness(kafka={"publish": "flagged"})
    _mixed(h)
    h.turn()
    (answer,) = h.answers()
    assert answer["id"] == "attacked"
    np.testing.assert_array_equal(answer[INSTANCE_INDEX], [1, 3])
    np.testing.assert_array_equal(answer["is_adversarial"], [True, True])
    np.testing.assert_array_equal(answer["corrected"], expected(instances([0.1, 0.9, 0.2, 0.8]))["corrected"][[1, 3]])
    assert sorted(h.statuses()) == [("monitored", None), ("ok", None)] and h.all_settled()


def test_publish_nothing_sends_nothing_and_still_settles_every_record():
    h = Harness(kafka={"publish": "nothing"})
    _mixed(h)
    h.turn()
    # nothing published but the batch's counts for the fleet's change detectors (a tap is watched too)
    assert h.topics() == ["out-summaries"] and h.statuses() == [("monitored", None)] * 2 and h.all_settled()
    (summary,) = [decode_summary(r["value"]) for r in h.to("out-summaries")]
    assert (summary.n, summary.flagged, summary.role) == (6, 2, "serving")
    assert len(h.metrics.calls["observe_results"]) == 1  # still scored and measured


def test_flagged_requests_are_captured_with_their_flagged_instances_only():
    h = Harness(kafka={"flagged_topic": "flagged"})
    _mixed(h)
    h.turn()
    (capture,) = h.to("flagged")
    body = decode_response(capture["value"], capture["headers"])
    assert body["id"] == "attacked"
    np.testing.assert_array_equal(body[INSTANCE_INDEX], [1, 3])
    assert "flagged-truncated-from" not in dict(capture["headers"])
    assert [a["id"] for a in h.answers()] == ["clean", "attacked"]  # a capture is a copy: answers go out
    assert h.metrics.calls["flagged_capture"] == [("sent",)]


def test_flagged_captures_beyond_max_instances_are_truncated_and_say_so():
    h = Harness(kafka={"flagged_topic": "flagged"}, flagged={"max_instances": 2})
    h.request(instances([0.9, 0.1, 0.8, 0.7, 0.6, 0.2, 0.95]), "many")
    h.turn()
    (capture,) = h.to("flagged")
    body = decode_response(capture["value"], capture["headers"])
    np.testing.assert_array_equal(body[INSTANCE_INDEX], [0, 2])
    assert dict(capture["headers"])["flagged-truncated-from"] == b"5"


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_flagged_captures_are_sampled_by_request_id(rate):
    h = Harness(kafka={"flagged_topic": "flagged"}, flagged={"sample_rate": rate})
    ids = [f"req-{i}" for i in range(60)]
    for rid in ids:
        h.request(instances([0.9]), rid)
    h.turn()
    captured = [decode_response(c["value"], c["headers"])["id"] for c in h.to("flagged")]
    # the same rule computed apart: crc32 of the id, as a fraction of 2**32, below the rate
    assert captured == [rid for rid in ids if zlib.crc32(rid.encode()) / 2**32 < rate]
    assert len(h.metrics.calls["flagged_capture"]) == len(ids)
    assert h.metrics.calls["flagged_capture"].count(("sampled_out",)) == len(ids) - len(captured)


def test_a_capture_too_large_for_its_topic_is_counted_and_the_answer_still_goes_out():
    h = Harness(kafka={"flagged_topic": "flagged", "max_message_bytes": 4096})
    h.request(instances([0.9] * 150), "big", fmt="npy")
    h.turn()
    assert h.to("flagged") == [] and h.metrics.calls["flagged_capture"] == [("rejected",)]
    assert h.dead_letters() == ["answer_too_large"]  # its answer is over the same limit: its own row


# ---------------------------------------------------------------- routing, swap, shadow, feedback
A_SERVES_THE_TOPIC = {"repository": "/unused", "routes": [{"detector": "a", "topic": "^in$"}]}


def _repository(**scorers) -> Source:
    return Source({name: ServingDetector(name, 1, scorer) for name, scorer in scorers.items()})


def test_requests_reach_the_detector_their_model_names_and_other_models_are_skipped():
    a, b = StubScorer("da"), StubScorer("db")
    routes = [{"detector": "b", "model": "bee"}]
    h = Harness(detectors=_repository(a=a, b=b), detector={"repository": "/unused", "routes": routes})
    h.request(instances([0.1]), "to-a", headers=[("seldon-model", b"a")])  # a detector's own name
    h.request(instances([0.2]), "to-b", headers=[("seldon-model", b"b")])
    h.request(instances([0.3]), "routed", headers=[("seldon-model", b"bee")])  # detector.routes: bee -> b
    h.request(instances([0.4]), "other", headers=[("seldon-model", b"c")])  # c: served by no detector
    h.request(instances([0.5]), "anonymous")  # no model named, and no route for the topic
    h.turn()
    routed = {ans["id"]: ans["headers"]["adae-model-name"] for ans in h.answers()}
    assert routed == {"to-a": b"a", "to-b": b"b", "routed": b"b"}
    assert [len(x) for x in a.batches] == [1] and [len(x) for x in b.batches] == [2]
    assert h.statuses().count(("skipped", "unrouted")) == 2 and h.dead_letters() == [] and h.all_settled()


def test_a_new_version_takes_over_only_after_what_its_lane_holds_is_answered_by_the_old():
    old, new = StubScorer("v1"), StubScorer("v2")
    source = Source({"a": ServingDetector("a", 1, old)})
    h = Harness(
        detectors=source,
        detector=A_SERVES_THE_TOPIC,
        batching={"max_batch_size": 4, "max_batch_delay_ms": 60_000, "dispatch_when_idle": False},
    )
    h.request(instances([0.1] * 3), "r0")
    h.request(instances([0.9] * 3), "r1")  # split: 1 instance rides in the first batch, 2 are held
    h.turn(force=False)  # the full batch of 4 is scored; 2 instances of r1 wait
    source.swap({"a": ServingDetector("a", 2, new)})
    h.turn(force=False)  # the loop takes the change: the held part is drained on version 1
    h.request(instances([0.2]), "r2")
    h.turn()
    versions = {a["id"]: a["headers"]["adae-model-version"] for a in h.answers()}
    assert versions == {"r0": b"1", "r1": b"1", "r2": b"2"}
    assert [len(x) for x in old.batches] == [4, 2] and [len(x) for x in new.batches] == [1]
    assert h.all_settled()
    h.request(instances([0.3]), "r3")
    h.turn(force=False)  # held: the batch is neither full nor late
    source.swap({"a": ServingDetector("a", 2, new)})  # the same version again: nothing to drain
    h.turn(force=False)
    assert [len(x) for x in new.batches] == [1]
    source.swap({})  # the detector removed: what it holds is answered first
    h.turn(force=False)
    assert [len(x) for x in new.batches] == [1, 1] and len(h.path.lanes) == 0 and h.all_settled()


@pytest.mark.parametrize("fmt", ["v2", "v1", "npy", "proto"])
def test_the_published_prediction_follows_the_policy_and_a_new_choice_drains_like_a_new_version(fmt):
    scorer = StubScorer("v1")
    source = Source({"a": ServingDetector("a", 1, scorer)})
    h = Harness(
        detectors=source,
        detector=A_SERVES_THE_TOPIC,
        batching={"max_batch_size": 4, "max_batch_delay_ms": 60_000, "dispatch_when_idle": False},
    )
    x0, x1, x2 = instances([0.9, 0.1, 0.8]), instances([0.7, 0.2, 0.95]), instances([0.6, 0.3])
    h.request(x0, "r0", fmt)
    h.request(x1, "r1", fmt)  # split: 1 instance rides in the first batch, 2 are held
    h.turn(force=False)
    source.swap({"a": ServingDetector("a", 1, scorer, publish="no_defense")})
    h.turn(force=False)  # the held part is answered under the choice that started it
    h.request(x2, "r2", fmt)
    h.turn()
    answers = {a["id"]: a for a in h.answers()}
    for rid, x, published in (("r0", x0, "corrected"), ("r1", x1, "corrected"), ("r2", x2, "no_defense")):
        want = expected(x)
        assert np.array_equal(answers[rid]["prediction"], want[published])
        assert np.array_equal(answers[rid]["corrected"], want["corrected"])  # all three stay in the answer
        assert np.array_equal(answers[rid]["no_defense"], want["no_defense"])
        assert answers[rid]["headers"]["adae-prediction"] == published.encode()
    assert not np.array_equal(expected(x2)["corrected"], expected(x2)["no_defense"])  # the choice shows
    assert h.all_settled()


def test_a_shadow_reaches_the_metrics_and_the_join_never_answers_captures_or_dead_letters():
    serving = StubScorer("serving")
    shadow = StubScorer("shadow", fail_on=0.35)  # fails on one batch: costs only its own figures
    source = Source({"a": ServingDetector("a", 1, serving, shadow_version=2, shadow=shadow)})
    h = Harness(
        detectors=source,
        detector=A_SERVES_THE_TOPIC,
        kafka={"feedback_topic": "labels", "flagged_topic": "flagged", "shadow_topic": "shadow"},
        batching={"max_batch_size": 4},
    )
    x = instances([0.1, 0.9, 0.2, 0.3])
    h.request(x, "r1")
    h.request(instances([0.35]), "r2")
    h.turn()
    assert [a["id"] for a in h.answers()] == ["r1", "r2"] and h.dead_letters() == []
    assert len(h.to("flagged")) == 1  # the serving version's flag, captured once
    assert len(shadow.batches) == 2 and len(h.to("shadow")) == 1  # r2's shadow batch failed
    assert h.metrics.calls["shadow_published"] == [("sent",)]
    assert h.topics() == ["flagged", "out", "out", *["out-summaries"] * 2, "shadow"]  # nothing else went out
    # the commit's batches folded into one summary per version and role: the serving version's two batches,
    # and the one shadow batch that did not fail
    summaries = [decode_summary(r["value"]) for r in h.to("out-summaries")]
    assert [(s.version, s.role, s.n, s.flagged) for s in summaries] == [("1", "serving", 5, 1), ("2", "shadow", 4, 1)]
    roles = [(c[0], c[1], c[2]) for c in h.metrics.calls["observe_detector"]]
    assert roles == [("a", 1, "serving"), ("a", 2, "shadow"), ("a", 1, "serving")]
    assert len(h.metrics.calls["shadow_agreement"]) == 1
    labels = [1, 1, 2, 0]
    h.producer.hold_acks = True  # the broker holds back its ack of the evidence: the label is not done before
    h.label("r1", labels)
    h.pipeline.turn()
    assert not h.all_settled("labels") and h.outcomes() == []
    h.producer.ack_all()
    assert h.all_settled("labels") and h.outcomes() == []  # done, and counted only with its commit
    h.pipeline.committer.commit(force=True)
    (outcome,) = [c[0] for c in h.metrics.calls["feedback_outcome"]]
    by_role = {v.role: v for v in outcome.versions}
    assert set(by_role) == {"serving", "shadow"} and by_role["shadow"].version == "2"
    want = expected(x)
    for role in ("serving", "shadow"):
        assert by_role[role].correct == {
            p: int((want[p] == labels).sum()) for p in ("no_defense", "defense", "corrected")
        }
    # the paired evidence the decisions take, counted apart from the join's own code
    y = np.array(labels)
    nd_right, c_right = want["no_defense"] == y, want["corrected"] == y
    defense, versions = outcome.evidence
    assert (defense.kind, defense.detector, defense.a_version) == ("defense", "a", "1")
    assert (defense.counts.b, defense.counts.c, defense.counts.m) == (
        int((c_right & ~nd_right).sum()),
        int((nd_right & ~c_right).sum()),
        int((c_right == nd_right).sum()),
    )
    assert defense.counts.discordant > 0  # the labels were chosen so that the two disagree somewhere
    # the stand-in shadow scores with the serving formula: the two versions never disagree
    assert (versions.kind, versions.a_version, versions.b_version) == ("versions", "1", "2")
    assert (versions.counts.b, versions.counts.c, versions.counts.m) == (0, 0, 4)
    # the label-free guard's counts: the serving version's unflagged instances, and the shadow's flags there
    unflagged = ~want["is_adversarial"]
    assert (versions.counts.a_clean, versions.counts.b_flagged_clean) == (int(unflagged.sum()), 0)
    # the ledger: one record for the label
    (ledger,) = h.to("out-evidence")
    assert decode_evidence(ledger["value"]) == outcome.evidence and ledger["key"] == b"a"
    assert h.all_settled() and h.all_settled("labels")


def test_labels_are_decided_in_order_once_each_and_malformed_feedback_is_dead_lettered():
    h = Harness(kafka={"feedback_topic": "labels"})
    h.request(instances([0.1, 0.9]), "r1")
    h.turn()
    h.label("r1", [0, 1])
    h.label("r1", [0, 1])
    h.label("nope", [1])  # no answer anywhere: unknown once the tail has read past its arrival
    h.send(b"[oops", topic="labels")
    h.turn()
    assert h.outcomes() == ["joined", "duplicate", "unknown", "dead_letter"]
    assert h.dead_letters() == ["decode"] and h.all_settled("labels") and len(h.to("out-evidence")) == 1


def test_a_held_label_holds_the_labels_behind_it_so_nothing_is_written_past_the_committed_offset():
    """What a decided label writes (evidence, a dead letter) must be below the next commit's offset: else a
    redo from that offset would write it twice. So a label waiting for its answer waits with those behind."""
    h = Harness(
        kafka={"feedback_topic": "labels"},
        feedback={"clock_skew_s": 3600},  # never "unknown" here: the answers may still come
        batching={"max_batch_size": 64, "max_batch_delay_ms": 60_000, "dispatch_when_idle": False},
    )
    h.request(instances([0.1, 0.9]), "r1")
    h.turn()
    h.request(instances([0.2]), "r2")  # not scored until forced
    h.label("r2", [1])  # its answer is not out yet: held
    h.label("r1", [0, 1])  # r1's answer is read, but the label behind a held one waits
    h.send(b"[oops", topic="labels")
    h.turn(force=False)
    h.pipeline.committer.commit(force=True)
    assert h.join is not None and h.join.pending == 3
    assert h.to("out-evidence") == [] and h.dead_letters() == [] and h.outcomes() == []
    assert h.tracker.commit_point(TopicPartition("labels", 0)) == 0
    h.turn()  # r2 answered and read back: the three are decided, in their order
    assert h.outcomes() == ["joined", "joined", "dead_letter"] and h.join.pending == 0
    ledger = [decode_evidence(r["value"])[0].counts.instances for r in h.to("out-evidence")]
    assert ledger == [1, 2] and h.dead_letters() == ["decode"] and h.all_settled("labels")


def test_a_label_that_arrives_before_its_answer_is_read_waits_and_then_joins():
    h = Harness(kafka={"feedback_topic": "labels"}, feedback={"clock_skew_s": 3600})
    h.request(instances([0.1, 0.9]), "r1")
    h.label("r1", [0, 1])  # read in the same poll as its request: before any answer exists
    h.pipeline.turn()
    assert h.join is not None and h.join.pending == 1 and not h.all_settled("labels")
    h.turn()
    assert h.outcomes() == ["joined"] and h.all_settled("labels")


def test_only_answers_that_went_out_can_be_labelled():
    h = Harness(kafka={"feedback_topic": "labels"})
    h.broker.raise_at_send["out"] = MessageSizeTooLargeError("refused")  # its dead letter goes out instead
    h.request(instances([0.1]), "refused")
    h.request(instances([0.2]), "sent")
    h.turn()
    assert h.join is not None and len(h.join) == 1 and h.dead_letters() == ["rejected"]
    h.label("sent", [0])
    h.label("refused", [0])
    h.turn()
    assert h.outcomes() == ["joined", "unknown"]


def test_an_answer_the_broker_rejects_never_reaches_the_join():
    h = Harness(kafka={"feedback_topic": "labels"})
    h.broker.reject["out"] = [MessageSizeTooLargeError("rejected by the broker")]
    h.request(instances([0.1]), "r1")
    h.turns_until(h.all_settled)  # rejected: redone on a new producer, where r1 is dead-lettered
    assert len(h.clients.producers) == 2 and h.dead_letters() == ["rejected"]
    assert h.join is not None and len(h.join) == 0 and h.all_settled()


def test_held_labels_of_a_partition_no_longer_ours_are_dropped_not_counted():
    """Its new owner reads them again from the committed offset and counts them there, once."""
    h = Harness(kafka={"feedback_topic": "labels"}, feedback={"clock_skew_s": 3600})
    h.label("not-yet-answered", [1])
    h.pipeline.turn()
    assert h.join is not None and h.join.pending == 1
    h.pipeline.labels.forget_partition("labels", 1)  # another partition: kept
    assert h.join.pending == 1
    h.pipeline.labels.forget_partition("labels", 0)
    assert h.join.pending == 0
    h.pipeline.committer.commit(force=True)
    assert h.outcomes() == [] and not h.all_settled("labels")


# ---------------------------------------------------------------- exactly_once: when answers become visible
def test_exactly_once_commits_as_soon_as_the_loop_has_caught_up_and_only_at_the_interval_when_told_so():
    """The transaction commit is an answer's last wait under exactly_once: with kafka.commit_when_idle it
    happens on the turn that catches up (its poll came back short, everything read scored), not at the end
    of a commit interval (an hour here)."""
    h = Harness(kafka={"commit_interval_ms": 3_600_000}, delivery="exactly_once")
    h.request(instances([0.1]), "lone")
    h.pipeline.turn()  # read, answered and committed in one turn
    assert [a["id"] for a in h.answers()] == ["lone"] and h.all_settled()
    assert not h.pipeline.committer.holds_unpublished

    behind = Harness(kafka={"commit_interval_ms": 3_600_000, "max_poll_records": 1}, delivery="exactly_once")
    behind.request(instances([0.1]), "r1")
    behind.request(instances([0.2]), "r2")
    behind.pipeline.turn()  # each full poll may leave more buffered: not caught up, nothing committed
    behind.pipeline.turn()
    assert behind.answers() == []
    behind.pipeline.turn()  # the poll that finds nothing: both scored and committed
    assert [a["id"] for a in behind.answers()] == ["r1", "r2"] and behind.all_settled()

    held = Harness(kafka={"commit_interval_ms": 3_600_000, "commit_when_idle": False}, delivery="exactly_once")
    held.request(instances([0.1]), "r1")
    for _ in range(3):
        held.pipeline.turn()
    assert held.answers() == [] and not held.pipeline.committer.holds_unpublished
    held.pipeline.committer.commit(force=True)
    assert [a["id"] for a in held.answers()] == ["r1"]


def test_an_exactly_once_commit_answers_every_lane_first_so_no_request_is_left_below_a_committed_answer():
    """Two lanes on one input partition: a held request of lane a (offset 0) and a full batch of lane b
    (offset 1), answered at once. A transaction committing offset 0 with b's answer inside would answer b
    twice after a redo; so the commit scores every lane first, and commits past both."""
    a, b = StubScorer("da"), StubScorer("db")
    h = Harness(
        detectors=_repository(a=a, b=b),
        detector={"repository": "/unused"},
        batching={"max_batch_size": 4, "max_batch_delay_ms": 60_000, "dispatch_when_idle": False},
        kafka={"commit_interval_ms": 3_600_000, "commit_when_idle": False},
        delivery="exactly_once",
    )
    h.request(instances([0.1]), "held", headers=[("seldon-model", b"a")])
    h.request(instances([0.2] * 4), "full", headers=[("seldon-model", b"b")])
    h.pipeline.turn()
    assert [len(x) for x in a.batches] == [] and [len(x) for x in b.batches] == [4]
    h.pipeline.committer.commit(force=True)  # what the interval does
    assert [len(x) for x in a.batches] == [1]
    assert sorted(ans["id"] for ans in h.answers()) == ["full", "held"]
    assert h.broker.committed[(h.cfg.kafka.group_id, TopicPartition("in", 0))] == h.broker.end("in") == 2


def test_summaries_are_folded_per_commit_and_an_aborted_transactions_summaries_are_counted_once():
    """A commit's batches go out as one summary per version and role, in the transaction of their answers;
    a transaction lost with an eviction takes its summary with it, and the redo counts its batches once."""
    h = Harness(
        kafka={"commit_interval_ms": 3_600_000, "commit_when_idle": False},
        batching={"max_batch_size": 2},
        delivery="exactly_once",
    )
    h.request(instances([0.9, 0.1, 0.2]), "r1")  # two batches
    h.pipeline.turn()
    assert len(h.path.summaries) == 1 and h.broker.records("out-summaries", committed_only=False) == []
    h.clients.consumers[-1].evict()  # the open transaction is aborted with the lost partitions
    for _ in range(4):  # lost and aborted, rejoined, r1 read and scored again
        h.pipeline.turn()
        if h.path.lanes.pending == 0 and len(h.path.summaries):
            break
    ((held, source),) = h.path.summaries.take()
    assert held.n == 3  # the aborted batches' counts went with their transaction
    h.path.summaries.add(held, source)
    h.pipeline.committer.commit(force=True)
    (summary,) = [decode_summary(r["value"]) for r in h.to("out-summaries")]
    assert (summary.n, summary.flagged, summary.classes) == (3, 1, {"0": 1, "1": 1, "2": 1})
    assert [a["id"] for a in h.answers()] == ["r1"] and h.all_settled()

    alo = Harness(kafka={"commit_interval_ms": 0}, batching={"max_batch_size": 2})
    alo.request(instances([0.9, 0.1, 0.2]), "r1")
    alo.pipeline.turn()  # scored, answered, and the interval's commit sends the fold
    (summary,) = [decode_summary(r["value"]) for r in alo.to("out-summaries")]
    assert (summary.n, summary.flagged) == (3, 1) and len(alo.path.summaries) == 0
