"""What every subcommand shares: logging set-up, the config, and where Kafka is."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from adae_stream.errors import ConfigError

if TYPE_CHECKING:
    from typing import TypeAlias

    from adae_stream.config import Config

    # what `add_subparsers()` returns: each subcommand's `register` adds its parser to it
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def fail(message: str, status: int = 2) -> NoReturn:
    """One line on stderr and an exit status: the operator's mistake, not a traceback."""
    print(f"adae-stream: {message}", file=sys.stderr)
    raise SystemExit(status)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every refused connection at ERROR; the pipeline logs connectivity once per retry itself
    logging.getLogger("kafka").setLevel(logging.CRITICAL if level != "DEBUG" else logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_config_or_exit(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """The config (file, then ADAE_* environment, then ``overrides``); exit 2 with its one-line error."""
    try:
        from adae_stream.config import load_config  # pydantic: ~0.3 s of every --help otherwise

        return load_config(path, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc))


def config_if_present(path: str, overrides: dict[str, Any] | None = None) -> Config:
    """The tools' config: the file when it exists, else the defaults (the tools work outside a checkout)."""
    return load_config_or_exit(path if Path(path).exists() else None, overrides)


def bootstrap_servers(args: argparse.Namespace, cfg: Config) -> str:
    """--bootstrap, else the config's; the embedded broker is reachable only from inside run/demo."""
    bootstrap: str = args.bootstrap or cfg.kafka.bootstrap_servers
    if bootstrap == "embedded":
        fail(
            "the embedded broker lives inside 'adae-stream run'/'demo'; "
            "pass --bootstrap HOST:PORT (printed at start-up)"
        )
    return bootstrap
