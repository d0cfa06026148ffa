"""An installed wheel runs the CLI: nothing it needs lives only in the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_runs_every_subcommands_help(tmp_path):
    """Built as a wheel and installed into a fresh environment outside the checkout, every subcommand's
    --help works: nothing the CLI needs lives only in the checkout (tests/, benchmarks/)."""
    from adae_stream.cli import build_parser

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("adae_stream-*.whl")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)  # its pip: ensurepip's
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies (numpy, kafka-python, ...) come from this environment's site-packages, appended
    # after the wheel's: a plain path entry, so this environment's editable install of the checkout is
    # not activated (its .pth hooks run only in site directories, not in appended paths).
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [python, "-c", "import adae_stream; print(adae_stream.__file__)"],
        cwd=outside,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout's
    script = env_dir / "bin" / "adae-stream"
    assert script.exists()
    names = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert names == ["acls", "backtest", "decide", "demo", "produce", "repository", "run", "tail", "train"]
    for command in [[], *[[name] for name in names]]:
        out = subprocess.run(
            [python, str(script), *command, "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, (command, out.stderr[-2000:])
        assert out.stdout.startswith(f"usage: adae-stream {' '.join(command)}".rstrip()), out.stdout[:200]
