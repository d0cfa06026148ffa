"""The tools around the pipeline: train, produce, tail, demo, bench (argparse sub-commands)."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    from adae_stream.detector.precision import PRECISIONS

    p = sub.add_parser("train", help="fit a detector for a saved classifier and save it")
    p.add_argument("--model", required=True, help="classifier .keras file (softmax outputs)")
    p.add_argument("--data", required=True, help="training instances, .npy (n, ...)")
    p.add_argument("--labels", help="true labels of --data, .npy (n,): the card's accuracies use them (else agreement "
                                   "with the classifier)")
    p.add_argument("--ae-preset", choices=["dense", "conv"], default="dense")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--epochs", type=int, default=20, help="at most this many (early stopping on the validation loss)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--w-recon", type=float, default=0.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--target-fpr", type=float, default=0.05,
                   help="false-positive rate on clean data to calibrate the threshold for, on the held-out split (default)")
    p.add_argument("--val-split", type=float, default=0.2, help="share of --data held out for calibration and early stopping")
    p.add_argument("--patience", type=int, default=5, help="epochs without a better validation loss before stopping")
    p.add_argument("--threshold-perc", type=float, default=None,
                   help="instead of --target-fpr: the seed's percentile of the training scores (optimistic: the AE fits them)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                   help="what scoring computes in; the threshold is inferred in it (training is float32)")
    p.add_argument("--out", required=True, help="directory to save the detector to")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("produce", help="replay a .npy file as requests to the input topic")
    p.add_argument("--file", required=True)
    p.add_argument("--format", choices=["v2", "v1", "npy", "proto", "triton"], default="v2",
                   help="proto: OIP protobuf with raw contents; triton: V2 JSON with a binary tensor tail")
    p.add_argument("--batch", type=int, default=8, help="instances per request")
    p.add_argument("--rate", type=float, default=0.0, help="requests per second (0: as fast as possible)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: config)")
    p.add_argument("--topic", help="default: the first of kafka.input_topic")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("tail", help="read and pretty-print answers from the output topic")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: config)")
    p.add_argument("--topic", help="default: kafka.output_topic")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--max", type=int, default=0, help="stop after this many answers (0: forever)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=cmd_tail)

    from adae_stream.demo.cli import register_demo

    register_demo(sub)

    p = sub.add_parser("bench", help="run the benchmark suite (benchmarks/)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)


def _config(path: str):
    from pathlib import Path

    from adae_stream.cli import _load_config

    return _load_config(path if Path(path).exists() else None)


def _bootstrap(args: argparse.Namespace, cfg) -> str:
    bootstrap = args.bootstrap or cfg.kafka.bootstrap_servers
    if bootstrap == "embedded":
        print("adae-stream: the embedded broker lives inside 'adae-stream run'/'demo'; pass --bootstrap HOST:PORT (printed at start-up)", file=sys.stderr)
        raise SystemExit(2)
    return bootstrap


def cmd_train(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from adae_stream import AdversarialAE, save_detector
    from adae_stream.detector.presets import AE_PRESETS
    from adae_stream.detector.keras_compat import TF_NN_ACTIVATIONS

    model = tf.keras.models.load_model(args.model, custom_objects=TF_NN_ACTIVATIONS, compile=False, safe_mode=True)
    X = np.load(args.data, allow_pickle=False).astype(np.float32)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if X.shape[1:] != shape:
        print(f"adae-stream: --data has instances of shape {X.shape[1:]}, the classifier expects {shape}", file=sys.stderr)
        return 2
    from adae_stream.detector.calibration import min_held_out

    if args.threshold_perc is None:  # calibration: refuse before training when the held-out set cannot support the rate
        if not 0.0 < args.val_split < 1.0 or not 0.0 < args.target_fpr < 1.0:
            print("adae-stream: --val-split and --target-fpr must be between 0 and 1", file=sys.stderr)
            return 2
        held_out, need = int(len(X) * args.val_split), min_held_out(args.target_fpr)
        if held_out < need:
            print(f"adae-stream: --target-fpr {args.target_fpr:g} needs at least {need} held-out clean instances; "
                  f"--val-split {args.val_split:g} of {len(X)} gives {held_out}. Use more data, a larger --val-split, "
                  "or a higher rate.", file=sys.stderr)
            return 2
    y = np.load(args.labels, allow_pickle=False).astype(np.int64) if args.labels else None
    if y is not None and y.shape != (len(X),):
        print(f"adae-stream: --labels has shape {y.shape}, --data holds {len(X)} instances", file=sys.stderr)
        return 2
    order = np.random.default_rng(0).permutation(len(X))
    n_val = int(len(X) * args.val_split) if 0.0 < args.val_split < 1.0 else 0
    X_val, X_fit = X[order[:n_val]], X[order[n_val:]]
    y_held = None if y is None else (y[order[:n_val]] if n_val else y[order])
    preset = AE_PRESETS[args.ae_preset]
    ae = preset(shape, args.latent_dim) if args.latent_dim else preset(shape)
    det = AdversarialAE(ae=ae, model=model, temperature=args.temperature, precision=args.precision, data_type="image" if len(shape) == 3 else "tabular")
    det.fit(X_fit, w_recon=args.w_recon, epochs=args.epochs, batch_size=args.batch_size, verbose=not args.quiet,
            validation_data=X_val if n_val else None, patience=args.patience if n_val else None)
    if args.threshold_perc is not None:
        thr = det.infer_threshold(X_fit, threshold_perc=args.threshold_perc)
        how = f"at the {args.threshold_perc}th percentile of the training scores"
    else:
        cal = det.calibrate_threshold(X_val, args.target_fpr)
        thr = cal.threshold
        how = (f"for a false-positive rate of {args.target_fpr:g}: {cal.expected_fpr:.2%} of {cal.held_out} held-out clean "
               f"instances flagged, at most {cal.fpr_upper_bound:.2%} at {cal.confidence:.0%} confidence")
    from adae_stream.detector.card import evaluate, write_card
    from adae_stream.detector.identity import detector_identity

    X_held = X_val if n_val else X[order]  # without a held-out split, the card can only use the training data
    det.meta["card"] = evaluate(det, X_held, y_held)
    det.meta["identity"] = detector_identity(det)
    save_detector(det, args.out)
    card = write_card(args.out, det, det.meta["card"], det.score(X_fit), det.score(X_held))
    print(f"saved detector to {args.out} (threshold {thr:.6g} {how}; {len(det.history)} epochs); card: {card}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from adae_stream.config import input_topics, kafka_security_kwargs
    from adae_stream.stream.codecs import encode_request

    cfg = _config(args.config)
    topic = args.topic or next(iter(input_topics(cfg.kafka)), None)
    if topic is None:
        print("adae-stream: kafka.input_pattern names no topic to produce to: give --topic", file=sys.stderr)
        return 2
    X = np.load(args.file, allow_pickle=False)
    producer = KafkaProducer(bootstrap_servers=_bootstrap(args, cfg), linger_ms=10, batch_size=1024 * 1024,
                             max_request_size=cfg.kafka.max_message_bytes, **kafka_security_kwargs(cfg.kafka))
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic()
    n = 0
    for i in range(0, len(X), args.batch):
        rid = f"req-{int(start * 1000)}-{n}"
        payload, headers = encode_request(X[i : i + args.batch], args.format, rid)
        producer.send(topic, value=payload, key=rid.encode(), headers=headers)
        n += 1
        if interval:
            time.sleep(max(0.0, start + n * interval - time.monotonic()))
    producer.flush()
    producer.close()
    print(f"produced {n} requests ({len(X)} instances, {args.format}) to {topic}")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer

    from adae_stream.config import kafka_security_kwargs
    from adae_stream.stream.codecs import decode_response

    cfg = _config(args.config)
    consumer = KafkaConsumer(args.topic or cfg.kafka.output_topic, bootstrap_servers=_bootstrap(args, cfg),
                             auto_offset_reset="earliest" if args.from_beginning else "latest", enable_auto_commit=False,
                             **kafka_security_kwargs(cfg.kafka))
    seen, idle_since = 0, time.monotonic()
    try:
        while not args.max or seen < args.max:
            polled = consumer.poll(timeout_ms=500)
            if not polled and args.timeout and time.monotonic() - idle_since > args.timeout:
                break
            for rec in (r for records in polled.values() for r in records):
                if args.max and seen >= args.max:
                    break  # the limit counts answers, not polls
                idle_since = time.monotonic()
                seen += 1
                try:
                    out = decode_response(rec.value, rec.headers)
                except (ValueError, KeyError) as exc:
                    print(f"p{rec.partition}@{rec.offset}: unreadable answer: {exc}")
                    continue
                flags = out.get("is_adversarial", np.zeros(0, bool))
                scores = out.get("instance_score")
                score_txt = f" max score {float(np.max(scores)):.4g}" if scores is not None and len(scores) else ""
                print(f"{out['id']}: n={len(out['corrected'])} flagged={int(np.sum(flags))}{score_txt} "
                      f"corrected={json.dumps(out['corrected'][:16].tolist())}")
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.__main__ import main as bench_main

    return bench_main(args.rest)
