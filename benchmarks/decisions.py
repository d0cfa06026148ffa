"""The decisions' error rates under the null, checked after every label, and the labels they need.

    python -m benchmarks.decisions [--paths 20000] [--labels 20000] [--seed 0]

1. The defense's two-sided sign test (alpha/2 each side), simulated where correction neither helps nor
   hurts: a share of the labelled instances is discordant, and the corrected prediction wins each
   discordant pair with probability 1/2. Looked at after every label; the rate of any decision over the
   whole run must stay <= alpha. Beside it, what a fixed-sample two-sided z-test at alpha does when it is
   looked at as often (what an alert on a point estimate does): far above alpha.
2. Promotion's non-inferiority test at the null's boundary (the shadow exactly delta worse), and the
   rollback's mirror test where the two versions are equally good, likewise after every label.
3. Labels needed to decide (median, and the share of runs decided within the budget) at several effect
   sizes.
4. What the evidence costs the loop per label: the paired counts the join computes, the ledger record's
   encoding, and its send (kafka-python to the embedded broker), against the label's join alone.
Figures in benchmarks/RESULTS.md, "Decisions: error rates and labels needed".
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from adae_stream.decisions.sequential import lambda_grid, sign_boundary

DISCORDANT_SHARE = 0.1  # labelled instances where the two options differ (the demo's blur mix: about 15 %)


def sign_paths(rng, paths: int, labels: int, p_win: float, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Per path and label: the discordant pairs so far and the corrected prediction's wins among them."""
    discordant = rng.random((paths, labels)) < share
    wins = discordant & (rng.random((paths, labels)) < p_win)
    return np.cumsum(discordant, axis=1, dtype=np.int32), np.cumsum(wins, axis=1, dtype=np.int32)


def sign_first_decision(n: np.ndarray, wins: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The label at which each path first decides either way (-1: never), and which way (+1 corrected better)."""
    boundary = sign_boundary(math.log(2.0 / alpha), int(n.max()))
    upper = wins >= boundary[n]
    lower = (n - wins) >= boundary[n]
    crossed = upper | lower
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    rows = np.arange(len(n))
    way = np.where(first >= 0, np.where(upper[rows, np.maximum(first, 0)], 1, -1), 0)
    return first, way


def naive_rate(n: np.ndarray, wins: np.ndarray, alpha: float, min_pairs: int) -> float:
    """A fixed-sample two-sided z-test of p = 1/2 at level alpha, checked after every label past
    ``min_pairs`` discordant pairs: the share of paths it ever rejects."""
    z = {0.05: 1.959964, 0.1: 1.644854}[alpha]
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.abs(2 * wins - n) / np.sqrt(n)
    return float(np.mean(np.any((stat > z) & (n >= min_pairs), axis=1)))


def noninferiority_first(rng, paths: int, labels: int, q_win: float, q_loss: float, delta: float, alpha: float):
    """Label of the first rejection per path (-1: never), the e-process recomputed after every label."""
    lam = lambda_grid(delta)
    up, down, tie = np.log1p(lam * (1 + delta)), np.log1p(lam * (delta - 1)), np.log1p(lam * delta)
    first = np.full(paths, -1)
    b = np.zeros(paths)
    c = np.zeros(paths)
    m = np.zeros(paths)
    threshold = math.log(1.0 / alpha) + math.log(len(lam))
    for t in range(labels):
        u = rng.random(paths)
        b += u < q_win
        c += (u >= q_win) & (u < q_win + q_loss)
        m += u >= q_win + q_loss
        log_terms = b[:, None] * up + c[:, None] * down + m[:, None] * tie
        crossed = np.logaddexp.reduce(log_terms, axis=1) >= threshold
        first[(first < 0) & crossed] = t
    return first


def summary(first: np.ndarray) -> str:
    decided = first >= 0
    median = f"{int(np.median(first[decided])) + 1:,}" if decided.any() else "-"
    return f"decided {decided.mean():6.1%}, median labels {median:>7}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decisions")
    ap.add_argument("--paths", type=int, default=20000)
    ap.add_argument("--labels", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    chunk = 2000

    share = f"{DISCORDANT_SHARE:.0%}"
    print(f"1. defense, sign test two-sided, {args.paths} runs of {args.labels} labels, {share} discordant,")
    print("   corrected wins a discordant pair with probability 1/2 (the null), checked after every label:")
    for alpha in (0.05, 0.1):
        decided, naive = 0, 0.0
        for start in range(0, args.paths, chunk):
            k = min(chunk, args.paths - start)
            n, wins = sign_paths(rng, k, args.labels, 0.5, DISCORDANT_SHARE)
            first, _ = sign_first_decision(n, wins, alpha)
            decided += int((first >= 0).sum())
            naive += naive_rate(n, wins, alpha, 30) * k
        rate = decided / args.paths
        se = math.sqrt(alpha * (1 - alpha) / args.paths)
        print(
            f"   alpha {alpha}: false decisions {rate:.4f} (simulation s.e. at alpha {se:.4f}); "
            f"a fixed-sample z-test looked at as often: {naive / args.paths:.3f}"
        )

    paths = max(200, args.paths // 10)
    labels = min(args.labels, 5000)
    print(f"2. rollout tests at the null's boundary, {paths} runs of {labels} labels, checked after every label:")
    for name, q_win, q_loss, delta in (
        ("promotion, delta 0.01, shadow exactly 1 point worse", 0.045, 0.055, 0.01),
        ("rollback (mirror, delta 0), the two versions equal", 0.05, 0.05, 0.0),
    ):
        first = noninferiority_first(rng, paths, labels, q_win, q_loss, delta, 0.05)
        se = math.sqrt(0.05 * 0.95 / paths)
        print(f"   {name}: false decisions {(first >= 0).mean():.4f} at alpha 0.05 (s.e. {se:.4f})")

    print("3. labels needed (alpha 0.05), 10 % discordant:")
    effect_paths = min(2000, args.paths)
    for p_win in (0.3, 0.35, 0.65, 0.7, 0.8):
        n, wins = sign_paths(rng, effect_paths, args.labels, p_win, DISCORDANT_SHARE)
        first, way = sign_first_decision(n, wins, 0.05)
        wrong = float(np.mean(way == (1 if p_win < 0.5 else -1)))
        print(
            f"   defense, corrected wins {p_win:.0%} of discordant pairs: {summary(first)}, the wrong way {wrong:.2%}"
        )
    for gain in (0.0, 0.01, 0.02):
        q_loss = (DISCORDANT_SHARE - gain) / 2
        first = noninferiority_first(rng, 500, labels, q_loss + gain, q_loss, 0.01, 0.05)
        print(f"   promotion, delta 0.01, shadow {gain * 100:+.0f} points: {summary(first)} (of {labels:,} labels)")
    print("4. per label of 8 instances, on the loop thread (µs, median of 5 passes):")
    for name, us in ledger_cost(args.seed).items():
        print(f"   {name:58s} {us:8.1f}")
    return 0


def ledger_cost(seed: int, labels: int = 5000) -> dict[str, float]:
    """Per label: the join's decision with the paired counts, and its commit (the journal: marks and counts
    take effect with the commit that covers the label), the paired counts alone, the ledger record's
    encoding, and a kafka-python send of it (flushed)."""
    import time

    from kafka import KafkaProducer

    from adae_stream.feedback.answers import Answer, Scored, evidence
    from adae_stream.feedback.join import FeedbackJoin, LabelRecord
    from adae_stream.feedback.ledger import encode_evidence
    from adae_stream.stream.broker import EmbeddedBroker

    rng = np.random.default_rng(seed)
    fields = {k: rng.integers(0, 10, 8) for k in ("no_defense", "defense", "corrected")}
    fields["is_adversarial"] = rng.random(8) < 0.3
    ys = [rng.integers(0, 10, 8) for _ in range(labels)]
    answer, new = Answer(time.time(), Scored.of("d", "1", "serving", fields)), np.ones(8, bool)
    records = [encode_evidence(evidence(answer, new, y)) for y in ys[:10]]
    out: dict[str, list[float]] = {}

    def timed(name: str, run) -> None:
        t0 = time.perf_counter()
        run()
        out.setdefault(name, []).append((time.perf_counter() - t0) / labels * 1e6)

    def joined(join: FeedbackJoin) -> None:
        for i, y in enumerate(ys):
            join.submit(LabelRecord("labels", 0, i, None, 0.0, f"r{i}", y))
        join.journal.commit({("labels", 0): len(ys)})

    for _ in range(5):
        join = FeedbackJoin(3600, 10**7)
        for i in range(labels):
            join.remember(f"r{i}", fields, detector="d", version="1")
        timed("a label joined and committed (paired counts included)", lambda j=join: joined(j))
        timed("  of which the paired counts (feedback.evidence)", lambda: [evidence(answer, new, y) for y in ys])
        timed(
            "the ledger record encoded (encode_evidence)",
            lambda: [encode_evidence(evidence(answer, new, y)) for y in ys],
        )
    with EmbeddedBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, acks="all")
        producer.send("ledger-bench", value=records[0]).get(timeout=30)

        def sent() -> None:
            for i in range(labels):
                producer.send("ledger-bench", value=records[i % 10], key=b"d")
            producer.flush()

        for _ in range(5):
            timed("the ledger record sent (kafka-python, acks=all, flushed)", sent)
        producer.close()
    return {name: float(np.median(values)) for name, values in out.items()}


if __name__ == "__main__":
    raise SystemExit(main())
