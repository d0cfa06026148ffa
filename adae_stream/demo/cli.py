"""`adae-stream demo`: the whole story on the embedded broker with one command."""
from __future__ import annotations

import argparse


def _mix(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError("mix must look like clean=0.5,fgsm=0.2,pgd=0.2,noise=0.1")


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train (or load) a digits detector and stream mixed traffic through the pipeline",
        description="Starts the embedded Kafka broker, trains or loads the demo detector (scikit-learn digits, cached), "
        "produces clean / FGSM / PGD / corrupted digit requests (Open Inference Protocol JSON), runs the pipeline with "
        "live /metrics, shows a live table and writes demo-report/ (Markdown + PNG plots).",
    )
    p.add_argument("--config", default="config.yaml", help="base config (default: config.yaml if present)")
    p.add_argument("--duration", type=float, help="seconds of traffic (default: demo.duration_s)")
    p.add_argument("--rate", type=float, help="requests per second (default: demo.rate)")
    p.add_argument("--batch", type=int, help="instances per request (default: demo.batch)")
    p.add_argument("--mix", type=_mix, help="traffic mix, e.g. clean=0.5,fgsm=0.15,pgd=0.15,noise=0.1,blur=0.05,occlusion=0.05")
    p.add_argument("--seed", type=int, help="random seed (default: demo.seed)")
    p.add_argument("--port", type=int, help="metrics port (0: any free port; default: metrics.port)")
    p.add_argument("--epochs", type=int, help="AE training epochs when the cache is cold (default: demo.epochs)")
    p.add_argument("--report-dir", help="where to write the report (default: demo.report_dir)")
    p.add_argument("--cache-dir", help="detector cache (default: demo.cache_dir)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adae_stream.cli import _load_config, _setup_logging
    from adae_stream.demo.run import run_demo

    demo = {k: v for k, v in {"duration_s": args.duration, "rate": args.rate, "batch": args.batch, "mix": args.mix, "seed": args.seed,
                              "epochs": args.epochs, "report_dir": args.report_dir, "cache_dir": args.cache_dir}.items() if v is not None}
    overrides: dict = {"demo": demo}
    if args.port is not None:
        overrides["metrics"] = {"port": args.port}
    cfg = _load_config(args.config if Path(args.config).exists() else None, overrides)
    _setup_logging("WARNING" if cfg.log_level == "INFO" else cfg.log_level)
    return run_demo(cfg)
