"""``adae-stream repository DIR``: what a detector repository holds and what a service would serve from it.

Read from the files alone (no TensorFlow, no model loaded): each version's ids come from its detector.json.
"Serves" is what the policy pins, else the highest complete version; a running service may still serve an
older one if that version fails to load (its log and adae_detector_load_failures_total say so).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from adae_stream.cli.common import fail

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("repository", help="list a detector repository: detectors, versions, policy, ids")
    parser.add_argument("directory", help="the repository (detector.repository)")
    parser.set_defaults(func=run)


def _ids(version_dir: Path) -> str:
    from adae_stream.detector.repository import COMPLETE_MARKER

    try:
        config = json.loads((version_dir / COMPLETE_MARKER).read_text())
        return f"detector_id {config['detector_id']} classifier_id {config['classifier_id']}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable detector.json ({type(exc).__name__})"


def describe(root: Path) -> list[str]:
    from adae_stream.detector.repository import read_policy, scan

    lines = []
    for name, versions in scan(root).items():
        try:
            policy = read_policy(root / name)
            serves = policy.serve if policy.serve is not None else max(versions, default=None)
            shadow, note = policy.shadow, f", publishes {policy.publish}{'' if policy.auto else ', auto: false'}"
            if policy.decisions:
                last = policy.decisions[-1]
                note += f", last decision {last.get('decision')} at {last.get('at')}"
        except ValueError as exc:
            serves, shadow, note = max(versions, default=None), None, f" (policy ignored: {exc})"
        lines.append(f"{name}: serves {serves if serves in versions else 'nothing'}{note}")
        for version, path in versions.items():
            role = "serving" if version == serves else "shadow" if version == shadow else ""
            lines.append(f"  {version:>4}  {role:<8} {_ids(path)}")
    return lines


def run(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        fail(f"{root} is not a directory")
    lines = describe(root)
    print("\n".join(lines) if lines else f"{root}: no detectors")
    return 0
