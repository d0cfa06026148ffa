"""The command-line tools refuse what they cannot do, before they touch a broker."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.process_helpers import cli

ROOT = Path(__file__).resolve().parents[2]


def test_produce_refuses_embedded(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    out = cli(f"produce --file {tmp_path / 'x.npy'} --config {ROOT / 'config.yaml'}")
    assert out.returncode == 2 and "--bootstrap" in out.stderr
