"""The ``adae-stream`` command: one module per subcommand, each with ``register`` (its arguments) and
the function that runs it. Subcommands import their heavy dependencies (TensorFlow, Kafka) only when
they run, so ``--help`` is fast and works wherever the package is installed."""

from __future__ import annotations

import argparse
import sys

from adae_stream.cli import acls, backtest, decide, demo, produce, repository, run, tail, train
from adae_stream.version import __version__

SUBCOMMANDS = (run, decide, backtest, train, repository, acls, produce, tail, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adae-stream", description="Adversarial detection and correction for Kafka ML traffic."
    )
    parser.add_argument("--version", action="version", version=f"adae-stream {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
