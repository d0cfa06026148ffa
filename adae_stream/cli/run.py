"""``adae-stream run``: the streaming pipeline."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from adae_stream.cli.common import fail, load_config_or_exit, setup_logging
from adae_stream.errors import STARTUP_ERRORS, PipelineError

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the streaming pipeline")
    parser.add_argument("--config", default=os.environ.get("ADAE_CONFIG", "config.yaml"))
    parser.add_argument("--detector", help="override detector.path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adae_stream.runner import run_pipeline

    cfg = load_config_or_exit(args.config, {"detector": {"path": args.detector}} if args.detector else None)
    setup_logging(cfg.log_level)
    logging.getLogger(__name__).info("config: %s", cfg.redacted())
    try:
        return run_pipeline(cfg)
    except STARTUP_ERRORS as exc:
        fail(str(exc))
    except PipelineError as exc:  # the loop reports its own; this is one raised before it ran
        fail(str(exc), status=1)
