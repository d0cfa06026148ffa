"""What the decision-maker must remember across its own restarts, kept in ``DIR/.decider/state.json``.

- the ledger totals and the offsets they were read up to, written together, so a restart neither loses
  nor counts twice any evidence (without the file the ledger is read again from its start);
- per detector, the serve / shadow / publish it last wrote or accepted: a policy.yaml that says otherwise
  was edited by a person, whose edit wins;
- per test, the counts at the last change of what it decides (a decision, or a person's edit): each test
  starts again from there, on evidence gathered under the new choice;
- versions rolled back, never promoted again by the decision-maker (a person may still serve them).

The repository's dot-directories are never read as detectors (detector/repository.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from adae_stream.feedback.evidence import Counts
from adae_stream.feedback.ledger import Totals

STATE_DIR = ".decider"
STATE_FILE = "state.json"
LOCK_FILE = "lock"


@dataclass
class DetectorState:
    written: dict  # {"serve", "shadow", "publish"} as last written or accepted
    base: dict[str, Counts] = field(default_factory=dict)  # test key -> counts at its last change
    rejected: list[int] = field(default_factory=list)  # rolled back: never promoted again automatically
    blocked: int | None = None  # the shadow version the guard holds back (logged once)


@dataclass
class DeciderState:
    totals: Totals = field(default_factory=Totals)
    detectors: dict[str, DetectorState] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "totals": self.totals.to_json(),
            "detectors": {
                name: {
                    "written": d.written,
                    "base": {k: dataclasses.asdict(c) for k, c in d.base.items()},
                    "rejected": d.rejected,
                    "blocked": d.blocked,
                }
                for name, d in sorted(self.detectors.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> DeciderState:
        detectors = {
            name: DetectorState(
                d["written"],
                {k: Counts(**c) for k, c in d.get("base", {}).items()},
                d.get("rejected", []),
                d.get("blocked"),
            )
            for name, d in data.get("detectors", {}).items()
        }
        return cls(Totals.from_json(data.get("totals", {})), detectors)


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_FILE


def load_state(root: Path) -> DeciderState:
    """The saved state; a fresh one when there is none. A corrupt file raises ValueError: starting over
    would forget whose edits won, so the operator decides (delete it to start over)."""
    path = state_path(root)
    if not path.exists():
        return DeciderState()
    try:
        return DeciderState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable decision-maker state ({exc}); delete it to start over") from None


def save_state(root: Path, state: DeciderState) -> None:
    """Atomically: a crash leaves the previous state, whose ledger offsets match its totals."""
    path = state_path(root)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1))
    os.replace(tmp, path)
