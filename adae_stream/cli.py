"""Command line: train / run / demo / produce / tail / bench."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from adae_stream import __version__


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kafka-python logs every refused connection at ERROR; the pipeline logs connectivity once per retry itself
    logging.getLogger("kafka").setLevel(logging.CRITICAL if level != "DEBUG" else logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load_config(path: str | None, overrides: dict | None = None):
    from adae_stream.config import ConfigError, load_config

    try:
        return load_config(path, overrides=overrides)
    except ConfigError as exc:
        print(f"adae-stream: {exc}", file=sys.stderr)
        raise SystemExit(2)


def cmd_run(args: argparse.Namespace) -> int:
    from adae_stream.config import ConfigError
    from adae_stream.detector_errors import startup_errors
    from adae_stream.runner import run_pipeline

    cfg = _load_config(args.config, {"detector": {"path": args.detector}} if args.detector else None)
    _setup_logging(cfg.log_level)
    logging.getLogger(__name__).info("config: %s", cfg.redacted())
    try:
        return run_pipeline(cfg)
    except (ConfigError, *startup_errors()) as exc:
        print(f"adae-stream: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adae-stream", description="Adversarial detection and correction for Kafka ML traffic.")
    parser.add_argument("--version", action="version", version=f"adae-stream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the streaming pipeline")
    p.add_argument("--config", default=os.environ.get("ADAE_CONFIG", "config.yaml"))
    p.add_argument("--detector", help="override detector.path")
    p.set_defaults(func=cmd_run)

    from adae_stream import cli_tools

    cli_tools.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
