"""``adae-stream train``: fit a detector for a saved classifier, calibrate its threshold, save it with its card."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adae_stream.cli.common import fail
from adae_stream.detector.precision import PRECISIONS

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers

SPLIT_SEED = 0  # the held-out split is reproducible: tests and the card can name the same instances


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("train", help="fit a detector for a saved classifier and save it")
    parser.add_argument(
        "--model",
        required=True,
        help="the classifier: a .keras file (softmax outputs), or on the torch backend a PyTorch one: .pt2 "
        "(torch.export.save) or TorchScript (with --allow-torchscript)",
    )
    parser.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        default=None,
        help="Keras backend to train on (default: KERAS_BACKEND, else tensorflow); a PyTorch classifier needs torch",
    )
    parser.add_argument("--logits", action="store_true", help="a PyTorch classifier returns logits, not probabilities")
    parser.add_argument(
        "--allow-torchscript",
        action="store_true",
        help="load a TorchScript classifier, which runs its own code when called (a .pt2 needs no opt-in)",
    )
    parser.add_argument(
        "--input-shape",
        help="per-instance input shape of a TorchScript classifier, e.g. 1,8,8 (a .pt2 records its own)",
    )
    parser.add_argument("--data", required=True, help="training instances, .npy (n, ...)")
    parser.add_argument(
        "--labels",
        help="true labels of --data, .npy (n,): the card's accuracies use them (else agreement with the classifier)",
    )
    parser.add_argument("--ae-preset", choices=["dense", "conv"], default="dense")
    parser.add_argument("--latent-dim", type=int, default=None)
    parser.add_argument(
        "--epochs", type=int, default=20, help="at most this many (early stopping on the validation loss)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--w-recon", type=float, default=0.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=0.05,
        help="false-positive rate on clean data to calibrate the threshold for, on the held-out split (default)",
    )
    parser.add_argument(
        "--val-split", type=float, default=0.2, help="share of --data held out for calibration and early stopping"
    )
    parser.add_argument(
        "--patience", type=int, default=5, help="epochs without a better validation loss before stopping"
    )
    parser.add_argument(
        "--threshold-perc",
        type=float,
        default=None,
        help="instead of --target-fpr: the seed's percentile of the training scores (optimistic: the AE fits them)",
    )
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="float32",
        help="what scoring computes in; the threshold is inferred in it (training is float32)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="directory to save the detector to")
    where.add_argument(
        "--repository", help="a detector repository (detector.repository): saved as the next version of --name"
    )
    parser.add_argument("--name", help="with --repository: the detector's name (its model's name, for routing)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run)


def check_calibration_is_possible(args: argparse.Namespace, n_instances: int) -> None:
    """Refuse before training when the held-out set cannot support the rate asked for."""
    from adae_stream.detector.calibration import min_held_out

    if not 0.0 < args.val_split < 1.0 or not 0.0 < args.target_fpr < 1.0:
        fail("--val-split and --target-fpr must be between 0 and 1")
    held_out, needed = int(n_instances * args.val_split), min_held_out(args.target_fpr)
    if held_out < needed:
        fail(
            f"--target-fpr {args.target_fpr:g} needs at least {needed} held-out clean instances; "
            f"--val-split {args.val_split:g} of {n_instances} gives {held_out}. Use more data, a larger --val-split, "
            "or a higher rate."
        )


def output_directory(args: argparse.Namespace) -> Path:
    """--out, or the next version of --name in --repository (written atomically: a poll never sees half)."""
    if args.out:
        return Path(args.out)
    from adae_stream.detector.repository import NAME, next_version

    if not args.name or not NAME.match(args.name):
        fail("--repository needs --name: letters, digits, '_', '-' and '.', not starting with '.' or '-'")
    root = Path(args.repository)
    if not root.is_dir():
        fail(f"--repository {root} is not a directory")
    return root / args.name / str(next_version(root, args.name))


def load_classifier(args: argparse.Namespace):
    """A .keras file under Keras' safe_mode, else a PyTorch archive (detector/torch_classifier.py)."""
    from adae_stream.detector.backend import current
    from adae_stream.errors import DetectorLoadError

    if args.model.endswith(".keras"):
        import keras

        from adae_stream.detector.keras_compat import custom_objects

        try:
            return keras.models.load_model(args.model, custom_objects=custom_objects(), compile=False, safe_mode=True)
        except Exception as exc:
            fail(f"cannot load --model {args.model}: {type(exc).__name__}: {exc}")
    if current() != "torch":
        fail(f"--model {args.model} is not a .keras file: a PyTorch classifier needs --backend torch")
    from adae_stream.detector.torch_classifier import load_torch_classifier

    try:
        shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
        return load_torch_classifier(
            args.model, shape, "logits" if args.logits else "probabilities", args.allow_torchscript
        )
    except (DetectorLoadError, ValueError) as exc:
        fail(str(exc))


def run(args: argparse.Namespace) -> int:
    from adae_stream.detector.backend import current, select
    from adae_stream.errors import ConfigError

    try:
        select(args.backend)  # before Keras is imported
    except ConfigError as exc:
        fail(str(exc))
    from adae_stream.detector import classifier
    from adae_stream.detector.adversarial_ae import AdversarialAE
    from adae_stream.detector.card import evaluate, write_card
    from adae_stream.detector.identity import detector_identity
    from adae_stream.detector.presets import AE_PRESETS
    from adae_stream.detector.saving import save_detector

    output_directory(args)  # a wrong --repository / --name fails now, not after training
    model = load_classifier(args)
    X = np.load(args.data, allow_pickle=False).astype(np.float32)
    shape = classifier.input_shape(model)
    if X.shape[1:] != shape:
        fail(f"--data has instances of shape {X.shape[1:]}, the classifier expects {shape}")
    if args.threshold_perc is None:
        check_calibration_is_possible(args, len(X))
    y = np.load(args.labels, allow_pickle=False).astype(np.int64) if args.labels else None
    if y is not None and y.shape != (len(X),):
        fail(f"--labels has shape {y.shape}, --data holds {len(X)} instances")

    order = np.random.default_rng(SPLIT_SEED).permutation(len(X))
    n_held_out = int(len(X) * args.val_split) if 0.0 < args.val_split < 1.0 else 0
    X_held_out, X_fit = X[order[:n_held_out]], X[order[n_held_out:]]
    preset = AE_PRESETS[args.ae_preset]
    # PyTorch images are (C, H, W); Keras' are (H, W, C)
    layout = {"channels_first": True} if args.ae_preset == "conv" and not classifier.is_keras(model) else {}
    ae = preset(shape, args.latent_dim, **layout) if args.latent_dim else preset(shape, **layout)
    detector = AdversarialAE(
        ae=ae,
        model=model,
        temperature=args.temperature,
        precision=args.precision,
        data_type="image" if len(shape) == 3 else "tabular",
    )
    detector.fit(
        X_fit,
        w_recon=args.w_recon,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=not args.quiet,
        validation_data=X_held_out if n_held_out else None,
        patience=args.patience if n_held_out else None,
    )
    if args.threshold_perc is not None:
        threshold = detector.infer_threshold(X_fit, threshold_perc=args.threshold_perc)
        how = f"at the {args.threshold_perc}th percentile of the training scores"
    else:
        calibration = detector.calibrate_threshold(X_held_out, args.target_fpr)
        threshold = calibration.threshold
        how = (
            f"for a false-positive rate of {args.target_fpr:g}: {calibration.expected_fpr:.2%} of "
            f"{calibration.held_out} held-out clean instances flagged, at most {calibration.fpr_upper_bound:.2%} "
            f"at {calibration.confidence:.0%} confidence"
        )
    # without a held-out split, the card can only use the training data
    X_card = X_held_out if n_held_out else X[order]
    y_card = None if y is None else (y[order[:n_held_out]] if n_held_out else y[order])
    detector.meta["card"] = evaluate(detector, X_card, y_card)
    detector.meta["identity"] = detector_identity(detector)
    out = output_directory(args)
    save_detector(detector, out)
    card = write_card(out, detector, detector.meta["card"], detector.score(X_fit), detector.score(X_card))
    print(
        f"saved detector to {out} (threshold {threshold:.6g} {how}; {len(detector.history)} epochs on {current()}); "
        f"card: {card}"
    )
    return 0
