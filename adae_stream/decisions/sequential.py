"""Anytime-valid tests on paired, labelled outcomes: the evidence a decision may act on after every label.

Two predictions A and B of the same labelled instance are concordant (both right or both wrong) or not;
only discordant pairs say which is better. With b = #(B right, A wrong), c = #(A right, B wrong) and
m = #concordant, each test below is an e-value that depends on (b, c[, m]) alone, so it can be computed
from counters summed over any number of replicas, in any order, after a restart of anything. Each is a
nonnegative supermartingale under its null (a mixture of likelihood ratios or of bets fixed in advance),
so by Ville's inequality the chance that it *ever* reaches 1/alpha under the null is at most alpha, however
often it is looked at (shared/reference/live-decisions.md has the sources).

Guarantees, one sentence each:
- ``log_sign_e``: if B wins each discordant pair with probability at most 1/2, the chance that
  log_sign_e(b, c) ever reaches log(1/alpha), over the whole stream, is at most alpha.
- ``log_noninferiority_e``: if B's accuracy is at most A's minus delta (each labelled pair independent),
  the chance that log_noninferiority_e(b, c, m, delta) ever reaches log(1/alpha) is at most alpha.
- With the arguments swapped (A's wins as b), each gives the mirror test ("B strictly worse" for delta 0).
- ``cusum_e_step`` (the switch back after a decision): if B wins each discordant pair with probability at
  most 1/2, the average number of discordant pairs before log_cusum_e reaches log(A) is at least A, however
  long and whatever happened before it started (an average of CUSUM e-detectors over SWITCH_GRID, Shin,
  Ramdas & Rinaldo, arXiv 2203.03532); its delay does not grow with the time since the switch.

Pure Python and numpy; tests/fast/test_sequential.py checks each against an independent computation
(scipy's incomplete beta and numerical integration, brute-force sums over all paths for small n).
"""

from __future__ import annotations

import math

import numpy as np

LAMBDA_GRID = 20  # bets in the non-inferiority mixture, equally weighted, evenly spread over (0, 1/(1-delta))


def _log_betacf(a: float, b: float, x: float) -> float:
    """log of the continued fraction of the regularised incomplete beta (modified Lentz), for
    x < (a + 1) / (a + b + 2), where it converges fast."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return math.log(h)


def log_incomplete_beta(a: float, b: float, x: float) -> tuple[float, float]:
    """(log I_x(a, b), log (1 - I_x(a, b))), the regularised incomplete beta and its complement, each
    computed directly (never as 1 minus the other) so that tails far below 1e-16 keep their digits."""
    if x <= 0.0:
        return -math.inf, 0.0
    if x >= 1.0:
        return 0.0, -math.inf
    log_front = a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    if x < (a + 1.0) / (a + b + 2.0):
        log_i = log_front + _log_betacf(a, b, x) - math.log(a)
        return log_i, _log1mexp(log_i)
    log_c = log_front + _log_betacf(b, a, 1.0 - x) - math.log(b)  # I_x(a, b) = 1 - I_{1-x}(b, a)
    return _log1mexp(log_c), log_c


def _log1mexp(log_p: float) -> float:
    """log(1 - exp(log_p)) for log_p <= 0, accurate at both ends."""
    if log_p >= 0.0:
        return -math.inf
    return math.log(-math.expm1(log_p)) if log_p > -0.693 else math.log1p(-math.exp(log_p))


def log_sign_e(wins: int, losses: int) -> float:
    """The sequential sign (McNemar) test's log e-value against H0: P(B wins a discordant pair) <= 1/2,
    mixing the likelihood ratio over a uniform prior on that probability in [1/2, 1]:
    E = 2^(n+1) B(b+1, c+1) (1 - I_1/2(b+1, c+1)), n = b + c. E_0 = 1."""
    if wins < 0 or losses < 0:
        raise ValueError("counts are non-negative")
    n = wins + losses
    log_beta = math.lgamma(wins + 1) + math.lgamma(losses + 1) - math.lgamma(n + 2)
    _, log_upper = log_incomplete_beta(wins + 1, losses + 1, 0.5)
    return (n + 1) * math.log(2.0) + log_beta + log_upper


def lambda_grid(delta: float, size: int = LAMBDA_GRID) -> np.ndarray:
    """The betting fractions of the non-inferiority mixture: evenly inside (0, 1/(1-delta)), where every
    factor 1 + lambda (D + delta) stays positive for D in {-1, 0, 1}."""
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"the margin delta must be in [0, 1), got {delta}")
    top = 1.0 / (1.0 - delta)
    return top * np.arange(1, size + 1) / (size + 1)


def log_noninferiority_e(wins: int, losses: int, ties: int, delta: float, size: int = LAMBDA_GRID) -> float:
    """Log e-value against H0: acc_B - acc_A <= -delta, from b = B's wins, c = A's wins and m = ties of the
    labelled pairs: an equal-weight mixture over ``lambda_grid`` of prod (1 + lambda (D_i + delta)), which is
    (1 + lambda (1 + delta))^b (1 + lambda (delta - 1))^c (1 + lambda delta)^m. E_0 = 1."""
    if min(wins, losses, ties) < 0:
        raise ValueError("counts are non-negative")
    lam = lambda_grid(delta, size)
    logs = wins * np.log1p(lam * (1 + delta)) + losses * np.log1p(lam * (delta - 1)) + ties * np.log1p(lam * delta)
    return float(np.logaddexp.reduce(logs) - math.log(size))


def sign_boundary(log_threshold: float, n_max: int) -> np.ndarray:
    """For each number of discordant pairs n <= n_max, the fewest wins b with log_sign_e(b, n - b) >=
    log_threshold (n + 1 when none): the test's rejection boundary, for simulations and dashboards.
    log_sign_e grows with b at fixed n, so a bisection per n finds it."""
    out = np.empty(n_max + 1, dtype=np.int64)
    for n in range(n_max + 1):
        lo, hi = 0, n + 1  # the answer is in [lo, hi]; hi = n + 1 means never
        while lo < hi:
            mid = (lo + hi) // 2
            if log_sign_e(mid, n - mid) >= log_threshold:
                hi = mid
            else:
                lo = mid + 1
        out[n] = lo
    return out


SWITCH_GRID = np.array([0.55, 0.6, 0.65, 0.7, 0.8, 0.9])  # the alternatives of the switch-back e-detector


def cusum_e_step(log_cusum: list[float], wins: int, losses: int) -> list[float]:
    """One check's discordant pairs (B's wins and losses since the last check) into each alternative's CUSUM
    of log likelihood ratios against 1/2: S = max(0, S + wins log(2 theta) + losses log(2 (1 - theta))). A
    check's pairs are added at once, which never gives a larger statistic than pair by pair (so the ARL bound
    holds)."""
    if wins < 0 or losses < 0:
        raise ValueError("counts are non-negative")
    s = np.asarray(log_cusum, float) + wins * np.log(2 * SWITCH_GRID) + losses * np.log(2 * (1 - SWITCH_GRID))
    return np.maximum(0.0, s).tolist()


def log_cusum_e(log_cusum: list[float]) -> float:
    """The e-detector: log of the equal-weight average of exp(S) over the grid."""
    return float(np.logaddexp.reduce(np.asarray(log_cusum, float)) - math.log(len(log_cusum)))
