"""What the decision-maker must remember across its own restarts, kept in ``DIR/.decider/state.json``.

- the ledger totals and the offsets they were read up to, written together, so a restart neither loses
  nor counts twice any evidence (without the file the ledger is read again from its start);
- per detector, the serve / shadow / publish it last wrote or accepted: a policy.yaml that says otherwise
  was edited by a person, whose edit wins;
- per test, the counts at the last change of what it decides (a decision, or a person's edit): each test
  starts again from there, on evidence gathered under the new choice;
- versions rolled back, never promoted again by the decision-maker (a person may still serve them);
- while a check writes policies, its ``Intent``: what each detector's state was before, and what its
  policy.yaml said before and will say after.

Why the intent: a check writes the policy files and this state, and a crash can come between any two of
those writes. Without it, a crash after a policy write and before the state's left the old state beside the
new policy: the decision-maker's own decision came back as "a person set serve: 1 (was 2)", and after a
rollback the rejected version was forgotten and promoted again (5 of 5 runs, issue 38). Now the state with
the intent is saved first, then the policies, then the state without it; ``load_state`` settles an intent
left by a crash: a policy that still reads as before was never written, so that detector's state goes back
to what it was, and the next check decides again on the same evidence, as an uninterrupted run did.

The repository's dot-directories are never read as detectors (detector/repository.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from adae_stream.detector.repository import policy_text
from adae_stream.feedback.evidence import Counts
from adae_stream.feedback.ledger import Totals
from adae_stream.files import replace_text

log = logging.getLogger(__name__)

STATE_DIR = ".decider"
STATE_FILE = "state.json"
LOCK_FILE = "lock"


@dataclass
class DetectorState:
    written: dict  # {"serve", "shadow", "publish"} as last written or accepted
    base: dict[str, Counts] = field(default_factory=dict)  # test key -> counts at its last change
    rejected: list[int] = field(default_factory=list)  # rolled back: never promoted again automatically
    blocked: int | None = None  # the shadow version the guard holds back (logged once)
    # after a decided switch of what answers publish: the switch back's e-detector (rules.SwitchBack)
    switch_back: dict | None = None

    def to_json(self) -> dict:
        base = {k: dataclasses.asdict(c) for k, c in self.base.items()}
        out = {"written": self.written, "base": base, "rejected": self.rejected, "blocked": self.blocked}
        if self.switch_back is not None:
            out["switch_back"] = self.switch_back
        return out

    @classmethod
    def from_json(cls, d: dict) -> DetectorState:
        base = {k: Counts(**c) for k, c in d.get("base", {}).items()}
        return cls(d["written"], base, d.get("rejected", []), d.get("blocked"), d.get("switch_back"))


def digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Intent:
    """The policies a check is about to write (detector -> digests of its text before and after), and each
    such detector's state before the check (None: it had none)."""

    writes: dict[str, tuple[str | None, str | None]]
    previous: dict[str, DetectorState | None]

    def to_json(self) -> dict:
        return {
            "writes": {name: list(pair) for name, pair in self.writes.items()},
            "previous": {name: ds.to_json() if ds else None for name, ds in self.previous.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> Intent:
        writes = {name: (pair[0], pair[1]) for name, pair in data["writes"].items()}
        previous = {name: DetectorState.from_json(d) if d else None for name, d in data["previous"].items()}
        return cls(writes, previous)


@dataclass
class DeciderState:
    totals: Totals = field(default_factory=Totals)
    detectors: dict[str, DetectorState] = field(default_factory=dict)
    intent: Intent | None = None

    def to_json(self) -> dict:
        out = {
            "totals": self.totals.to_json(),
            "detectors": {name: d.to_json() for name, d in sorted(self.detectors.items())},
        }
        if self.intent is not None:
            out["intent"] = self.intent.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict) -> DeciderState:
        detectors = {name: DetectorState.from_json(d) for name, d in data.get("detectors", {}).items()}
        intent = Intent.from_json(data["intent"]) if data.get("intent") else None
        return cls(Totals.from_json(data.get("totals", {})), detectors, intent)

    def undo(self, detector: str, previous: DetectorState | None) -> None:
        """A planned policy write that did not happen: the detector's state as it was before it."""
        if previous is None:
            self.detectors.pop(detector, None)
        else:
            self.detectors[detector] = previous


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_FILE


def load_state(root: Path) -> DeciderState:
    """The saved state, with an intent a crash left settled; a fresh one when there is none. A corrupt
    file raises ValueError: starting over would forget whose edits won, so the operator decides (delete it
    to start over)."""
    path = state_path(root)
    if not path.exists():
        return DeciderState()
    try:
        state = DeciderState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: unreadable decision-maker state ({exc}); delete it to start over") from None
    if state.intent is not None:
        settle_intent(root, state)
        save_state(root, state)
    return state


def settle_intent(root: Path, state: DeciderState) -> None:
    """After a crash between the intent and the end of its writes: each policy that still reads as before
    was not written, and its detector's state goes back to what it was."""
    intent = state.intent
    assert intent is not None
    for name, (before, _after) in intent.writes.items():
        if digest(policy_text(root / name)) == before:
            state.undo(name, intent.previous.get(name))
            log.warning("the policy of %s was not written before the decision-maker stopped: decided again", name)
    state.intent = None


def save_state(root: Path, state: DeciderState) -> None:
    """Atomically: a crash leaves the previous state, whose ledger offsets match its totals."""
    path = state_path(root)
    path.parent.mkdir(exist_ok=True)
    replace_text(path, json.dumps(state.to_json(), indent=1))
