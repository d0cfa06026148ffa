"""`adae-stream produce` and `tail` as real processes against a real broker and pipeline."""

from __future__ import annotations

import numpy as np

from tests.kafka_helpers import collect, make_config, start_pipeline
from tests.process_helpers import cli


def test_produce_and_tail(broker, tmp_path, digits_setup, digits_scorer, digits_detector_path):
    cfg = make_config(broker.bootstrap, digits_detector_path)
    np.save(tmp_path / "x.npy", digits_setup["Xte"][:40])
    run = start_pipeline(cfg, digits_scorer)
    try:
        for fmt in ("v2", "v1", "npy", "proto", "triton"):
            out = cli(
                f"produce --file {tmp_path / 'x.npy'} --format {fmt} --batch 8 --rate 50 --bootstrap "
                f"{broker.bootstrap} --topic {cfg.kafka.input_topic}"
            )
            assert out.returncode == 0, out.stderr[-2000:]
            assert f"produced 5 requests (40 instances, {fmt})" in out.stdout
        assert len(collect(broker.bootstrap, cfg.kafka.output_topic, 25, timeout_s=60)) == 25
        tail = cli(
            f"tail --bootstrap {broker.bootstrap} --topic {cfg.kafka.output_topic} --from-beginning --max 25 --timeout "
            "20"
        )
        # --max counts answers, not polls: one poll that brings all 25 still prints only 3 (it printed 15 before)
        few = cli(
            f"tail --bootstrap {broker.bootstrap} --topic {cfg.kafka.output_topic} --from-beginning --max 3 --timeout "
            "20"
        )
    finally:
        run.stop()
    assert tail.returncode == 0, tail.stderr[-2000:]
    lines = [line for line in tail.stdout.splitlines() if line.startswith("req-")]
    assert len(lines) == 25  # every family's answers are readable by tail
    assert all("n=8" in line and "flagged=" in line and "corrected=[" in line for line in lines)
    assert few.returncode == 0 and len([line for line in few.stdout.splitlines() if line.startswith("req-")]) == 3
