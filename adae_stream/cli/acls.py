"""``adae-stream acls``: the ACLs the service needs with this config, as kafka-acls.sh commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from adae_stream.cli.common import load_config_or_exit

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "acls", help="print the least-privilege ACLs this config needs (kafka-acls.sh commands)"
    )
    parser.add_argument("--config", default=None, help="the service's config (default: defaults + ADAE_*)")
    parser.add_argument("--principal", default="User:adae-stream", help="the service's principal")
    parser.add_argument(
        "--decide", action="store_true", help="the decision-maker's ACLs (adae-stream decide) instead of the service's"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adae_stream.stream.acls import decider_acls, required_acls

    cfg = load_config_or_exit(args.config)
    for acl in decider_acls(cfg) if args.decide else required_acls(cfg):
        print(f"# {acl.why}")
        print(acl.kafka_acls_command(args.principal))
    return 0
