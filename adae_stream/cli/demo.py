"""``adae-stream demo``: the whole story on the embedded broker with one command."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from adae_stream.cli.common import config_if_present, setup_logging

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers


def traffic_mix(text: str) -> dict[str, float]:
    try:
        return {kind.strip(): float(share) for kind, share in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError("mix must look like clean=0.5,fgsm=0.2,pgd=0.2,noise=0.1") from None


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train (or load) a digits detector and stream mixed traffic through the pipeline",
        description="Starts the embedded Kafka broker, trains or loads the demo detector (scikit-learn digits, "
        "cached), produces clean / FGSM / PGD / corrupted digit requests (Open Inference Protocol JSON), runs the "
        "pipeline with live /metrics, shows a live table and writes demo-report/ (Markdown + PNG plots).",
    )
    parser.add_argument("--config", default="config.yaml", help="base config (default: config.yaml if present)")
    parser.add_argument("--duration", type=float, help="seconds of traffic (default: demo.duration_s)")
    parser.add_argument("--rate", type=float, help="requests per second (default: demo.rate)")
    parser.add_argument("--batch", type=int, help="instances per request (default: demo.batch)")
    parser.add_argument(
        "--mix",
        type=traffic_mix,
        help="traffic mix, e.g. clean=0.5,fgsm=0.15,pgd=0.15,noise=0.1,blur=0.05,occlusion=0.05",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: demo.seed)")
    parser.add_argument("--port", type=int, help="metrics port (0: any free port; default: metrics.port)")
    parser.add_argument("--epochs", type=int, help="AE training epochs when the cache is cold (default: demo.epochs)")
    parser.add_argument("--report-dir", help="where to write the report (default: demo.report_dir)")
    parser.add_argument("--cache-dir", help="detector cache (default: demo.cache_dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adae_stream.demo.run import run_demo

    given = {
        "duration_s": args.duration,
        "rate": args.rate,
        "batch": args.batch,
        "mix": args.mix,
        "seed": args.seed,
        "epochs": args.epochs,
        "report_dir": args.report_dir,
        "cache_dir": args.cache_dir,
    }
    overrides: dict[str, Any] = {"demo": {key: value for key, value in given.items() if value is not None}}
    if args.port is not None:
        overrides["metrics"] = {"port": args.port}
    cfg = config_if_present(args.config, overrides)
    setup_logging("WARNING" if cfg.log_level == "INFO" else cfg.log_level)
    return run_demo(cfg)
