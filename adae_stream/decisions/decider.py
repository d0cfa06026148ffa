"""The decision-maker: the ledger's summed evidence in, decisions out, as the policy.yaml each one makes
(service.py writes them, the state's intent first: state.py).

One per repository (``adae-stream decide`` holds ``DIR/.decider/lock``). The replicas' watchers apply what
it writes at their next poll, exactly as they apply a person's edit: policy.yaml is the one control plane.
Per detector, at every check:

- **a person's edit wins**: serve / shadow / publish differing from what it last wrote is a manual edit,
  accepted as is; the tests it touches start again from the counts at that moment, so the same evidence
  never undoes it. ``auto: false`` freezes the detector.
- **defense**: decide_defense on the serving version's labelled instances since the last change of
  ``publish``; a decision sets ``publish``, and the test goes on (it can turn back).
- **promotion**: a shadow shown non-inferior by ``decisions.margin``, whose label-free guard passes (its
  flag rate on what the serving version leaves unflagged, at most ``guard_factor`` times its calibrated
  false-positive bound), is promoted; the version it replaces shadows it on probation.
- **rollback**: on probation, a serving version shown strictly worse than the one it replaced is rolled
  back (and never promoted again by the decision-maker); after ``probation_instances`` labelled
  instances without that, the probation ends and the shadow is dropped. A person's promotion is put on
  probation the same way (its predecessor becomes the shadow, unless a shadow is set).

It reads the policies and plans; no Kafka, no writes, no clock but ``now``: tests/fast/test_decider.py drives
it through service.decide.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from adae_stream.config import DecisionsConfig
from adae_stream.decisions.rules import (
    Verdict,
    alpha_per_test,
    decide_defense,
    decide_promotion,
    decide_rollback,
    decide_switch_back,
    switch_back_start,
)
from adae_stream.decisions.state import DeciderState, DetectorState
from adae_stream.detector.repository import Policy, policy_text, read_policy, render_policy, scan
from adae_stream.feedback.evidence import Counts

log = logging.getLogger(__name__)
CONTROLS = ("serve", "shadow", "publish")
HEADER = "decisions by adae-stream decide (README, 'Decisions from live evidence'); a person's edit wins"


@dataclass(frozen=True)
class Decision:
    """One decision with its evidence: logged, counted, and written beside it in policy.yaml."""

    detector: str
    decision: str  # publish_corrected | publish_no_defense | promote | rollback | probation | probation_passed | manual
    detail: str
    verdict: Verdict | None = None

    def audit(self, now: float) -> dict:
        entry: dict = {
            "at": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="seconds"),
            "decision": self.decision,
            "detail": self.detail,
        }
        if self.verdict is not None:
            v = self.verdict
            entry |= {
                "alpha": round(v.alpha, 6),
                "e_values": {k: float(f"{e:.4g}") for k, e in v.e_values.items()},
                "pairs": {"b": v.pairs.b, "c": v.pairs.c, "m": v.pairs.m},
            }
        return entry


@dataclass(frozen=True)
class PolicyWrite:
    """A policy.yaml to write: its text when it was read (a write is refused if it changed since), its new
    text, and the decisions it carries."""

    detector: str
    before: str | None
    after: str
    decisions: list[Decision]


def calibrated_fpr_bound(version_dir: Path) -> float | None:
    """The one-sided upper bound on the clean false-positive rate saved at calibration, if any."""
    try:
        meta = json.loads((version_dir / "detector.json").read_text()).get("meta") or {}
        bound = (meta.get("calibration") or {}).get("fpr_upper_bound")
        return float(bound) if bound is not None else None
    except (OSError, ValueError, AttributeError):
        return None


class Decider:
    def __init__(
        self,
        root: str | Path,
        cfg: DecisionsConfig,
        on_verdict: Callable[[str, str, Verdict], None] = lambda detector, test, verdict: None,
    ) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self._on_verdict_callback = on_verdict  # every test's verdict at every check (the e-value gauges)
        self.verdicts: dict[tuple[str, str], Verdict] = {}  # (detector, test) -> its last verdict

    def _on_verdict(self, detector: str, test: str, verdict: Verdict) -> None:
        self.verdicts[(detector, test)] = verdict
        self._on_verdict_callback(detector, test, verdict)

    def standing(self) -> str:
        """Where every test stands now, for a log line when nothing is decided."""
        parts = []
        for (detector, test), v in sorted(self.verdicts.items()):
            e = ", ".join(f"{k} e={value:.3g}" for k, value in v.e_values.items())
            parts.append(f"{detector} {test}: {v.pairs.discordant} discordant pairs, {e}")
        return "; ".join(parts) or "no test under way"

    def step(self, state: DeciderState, now: float) -> list[PolicyWrite]:
        """Check every detector once. Returns what to write into which policy.yaml, with the decisions it
        carries; ``state`` is left as it will be once they are written (service.py writes them, so that the
        state can say first what it is about to write: state.py's Intent)."""
        found = {name: versions for name, versions in scan(self.root).items() if versions}
        alpha = alpha_per_test(self.cfg.alpha, max(len(found), 1))
        out: list[PolicyWrite] = []
        for name, versions in found.items():
            try:
                write = self._detector(state, name, versions, alpha, now)
            except ValueError as exc:  # an unreadable policy: a person is editing it; nothing is decided
                log.warning("decisions for %s wait: %s", name, exc)
                continue
            if write is not None:
                out.append(write)
        return out

    def _detector(
        self, state: DeciderState, name: str, versions: dict[int, Path], alpha: float, now: float
    ) -> PolicyWrite | None:
        directory = self.root / name
        before = policy_text(directory)
        policy = read_policy(directory)
        controls = {k: getattr(policy, k) for k in CONTROLS}
        ds = state.detectors.setdefault(name, DetectorState(dict(controls)))
        serving = policy.serve if policy.serve is not None else max(versions)
        decisions: list[Decision] = []
        if ds.written != controls:
            decisions.append(Decision(name, "manual", f"a person set {self._changed(ds.written, controls)}"))
            policy = self._accept_edit(state, ds, name, policy, serving)
        if policy.auto:
            policy = self._defense(state, ds, name, policy, serving, alpha, decisions)
            policy = self._rollout(state, ds, name, policy, serving, versions, alpha, decisions)
        if not decisions:
            return None
        for d in decisions:
            log.warning("decision for %s: %s (%s)%s", name, d.decision, d.detail, _evidence_text(d.verdict))
        trail = [*policy.decisions, *(d.audit(now) for d in decisions)][-self.cfg.audit_keep :]
        policy = replace(policy, decisions=trail)
        ds.written = {k: getattr(policy, k) for k in CONTROLS}
        return PolicyWrite(name, before, render_policy(policy, HEADER), decisions)

    @staticmethod
    def _changed(old: dict, new: dict) -> str:
        return ", ".join(f"{k}: {new[k]} (was {old.get(k)})" for k in CONTROLS if old.get(k) != new[k])

    def _accept_edit(self, state: DeciderState, ds: DetectorState, name: str, p: Policy, serving: int) -> Policy:
        """The tests the edit touches start again from now; a person's promotion goes on probation."""
        totals = state.totals
        if p.publish != ds.written.get("publish"):
            ds.base[f"defense:{serving}"] = totals.get("defense", name, serving, serving)
            ds.switch_back = None  # a person's choice: the sign test from now, as before any decision
        if p.shadow is not None:
            ds.base[f"versions:{serving}:{p.shadow}"] = totals.get("versions", name, serving, p.shadow)
        previous = ds.written.get("serve")
        if p.auto and p.serve is not None and previous is not None and p.serve != previous and p.shadow is None:
            p = replace(p, shadow=previous, probation={"replaced": previous, "promoted": p.serve})
            ds.base[f"versions:{p.serve}:{previous}"] = totals.get("versions", name, p.serve, previous)
        ds.written = {k: getattr(p, k) for k in CONTROLS}
        return p

    def _since(self, state: DeciderState, ds: DetectorState, key: str, name: str, a: int, b: int) -> Counts:
        """The comparison's counts since its test last started (``key`` names the test: kind:a[:b])."""
        return state.totals.get(key.split(":")[0], name, a, b) - ds.base.get(key, Counts())

    def _defense(self, state, ds, name: str, p: Policy, serving: int, alpha: float, out: list) -> Policy:
        """The sign test from the last change (a person's edit, a new serving version); once it has switched,
        the switch back is a change detector on the pairs since (rules.decide_switch_back)."""
        key = f"defense:{serving}"
        now = state.totals.get("defense", name, serving, serving)
        back = ds.switch_back
        if back is not None and back.get("serving") == serving and back["publish"] == p.publish:
            verdict, ds.switch_back = decide_switch_back(
                back, now, self.cfg.switch_back_arl, self.cfg.min_discordant, alpha
            )
        else:
            pairs = self._since(state, ds, key, name, serving, serving)
            verdict = decide_defense(pairs, alpha, self.cfg.min_discordant, p.publish)  # type: ignore[arg-type]
        self._on_verdict(name, "defense", verdict)
        if verdict.decision is None:
            return p
        ds.base[key] = now  # the next switch needs new evidence
        ds.switch_back = {**switch_back_start(verdict.decision, now), "serving": serving}  # type: ignore[arg-type]
        out.append(Decision(name, f"publish_{verdict.decision}", f"version {serving}", verdict))
        return replace(p, publish=verdict.decision)

    def _rollout(self, state, ds, name: str, p: Policy, serving: int, versions, alpha: float, out: list) -> Policy:
        shadow = p.shadow
        if shadow is None or shadow == serving or shadow not in versions:
            return p
        key = f"versions:{serving}:{shadow}"
        tally = self._since(state, ds, key, name, serving, shadow)
        replaced = (p.probation or {}).get("replaced")
        if replaced == shadow:  # on probation: the promoted version against the one it replaced
            verdict = decide_rollback(tally, alpha, self.cfg.min_discordant)  # B: the replaced one
            self._on_verdict(name, "rollback", verdict)
            if verdict.decision is not None:
                ds.rejected.append(serving)
                out.append(Decision(name, "rollback", f"version {shadow} serves again; {serving} rejected", verdict))
                return replace(p, serve=shadow, shadow=None, probation=None)
            if tally.instances >= self.cfg.probation_instances:
                out.append(Decision(name, "probation_passed", f"version {serving} stays; {shadow} no longer shadows"))
                return replace(p, shadow=None, probation=None)
            return p
        if shadow in ds.rejected:
            return p
        verdict = decide_promotion(tally, alpha, self.cfg.margin, self.cfg.min_discordant)
        self._on_verdict(name, "promotion", verdict)
        if verdict.decision is None:
            return p
        blocked = self._guard(tally, versions[shadow])
        if blocked is not None:
            if ds.blocked != shadow:
                ds.blocked = shadow
                log.warning("promotion of %s version %d held back by the label-free guard: %s", name, shadow, blocked)
            return p
        ds.base[f"versions:{shadow}:{serving}"] = state.totals.get("versions", name, shadow, serving)
        out.append(Decision(name, "promote", f"version {shadow} serves; {serving} shadows it on probation", verdict))
        return replace(p, serve=shadow, shadow=serving, probation={"replaced": serving, "promoted": shadow})

    def _guard(self, tally: Counts, shadow_dir: Path) -> str | None:
        """Why the label-free guard holds a promotion back, or None when it passes."""
        if tally.a_clean < self.cfg.guard_min_instances:
            return f"{tally.a_clean} of {self.cfg.guard_min_instances} instances left unflagged by the serving version"
        bound = calibrated_fpr_bound(shadow_dir)
        if bound is None:
            return None  # no calibration saved: the guard has nothing to compare with
        rate = tally.b_flagged_clean / tally.a_clean
        if rate > self.cfg.guard_factor * bound:
            return f"it flags {rate:.3f} of them, over {self.cfg.guard_factor:g} x its calibrated bound {bound:.3f}"
        return None


def _evidence_text(verdict: Verdict | None) -> str:
    if verdict is None:
        return ""
    e = ", ".join(f"{k} e={v:.3g}" for k, v in verdict.e_values.items())
    p = verdict.pairs
    return f"; evidence b={p.b} c={p.c} m={p.m}, {e}, alpha={verdict.alpha:.4g}"
