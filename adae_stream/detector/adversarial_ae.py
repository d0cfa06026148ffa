"""AdversarialAE: detection and correction by matching prediction distributions (Vacanti & Van Looveren, 2020).

Same constructor, fit, infer_threshold, score, predict and correct semantics as alibi-detect 0.13.0's
AdversarialAE, so users can switch without surprises; faster (one fused compiled call per batch, a
compiled training step) and without the reference's float64-weights crash on hidden-layer KL. Written in
keras.ops: it runs on TensorFlow (the default), JAX or PyTorch, and protects Keras or PyTorch classifiers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from adae_stream.detector import classifier
from adae_stream.detector.calibration import Calibration, calibrate, reference_sample
from adae_stream.detector.hidden import build_hidden_models
from adae_stream.detector.identity import scorer_info
from adae_stream.detector.losses import loss_adv_ae
from adae_stream.detector.precision import check_precision, compute_copy, sync
from adae_stream.detector.scorer import FusedScorer, JitCompile, ThresholdedScorer
from adae_stream.detector.trainer import Training, make_optimizer, train_ae
from adae_stream.errors import ThresholdNotSetError
from adae_stream.scoring import BUCKET_SIZES
from adae_stream.version import __version__

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1024


class AdversarialAE:
    """Adversarial auto-encoder detector with a fit / infer_threshold / score / predict / correct API."""

    def __init__(
        self,
        threshold: float | None = None,
        ae: keras.Model | None = None,
        model: classifier.Classifier | None = None,
        encoder_net: keras.Model | None = None,
        decoder_net: keras.Model | None = None,
        model_hl: Sequence[keras.Model] | None = None,
        hidden_layer_kld: Mapping[int, int] | None = None,
        w_model_hl: Sequence[float] | None = None,
        temperature: float = 1.0,
        data_type: str | None = None,
        precision: str = "float32",
    ) -> None:
        """The seed's parameters, plus ``precision``: what scoring computes in ("float32", the default,
        "mixed_bfloat16" or "mixed_float16"). Training is float32 either way; infer_threshold scores in
        ``precision``, so the threshold matches the scores it is compared with."""
        model = classifier.check(model)
        if isinstance(ae, keras.Model):
            self.ae = ae
        elif isinstance(encoder_net, keras.Model) and isinstance(decoder_net, keras.Model):
            self.ae = keras.Sequential([encoder_net, decoder_net], name="adversarial_ae")
        else:
            raise TypeError("give either ae (a keras.Model) or both encoder_net and decoder_net (Keras models)")
        if not float(temperature) > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if hidden_layer_kld is not None and model_hl is not None:
            raise ValueError("give hidden_layer_kld or model_hl, not both")

        self.model = model
        self.model.trainable = False  # the classifier stays frozen
        self.hidden_layer_kld = dict(hidden_layer_kld) if hidden_layer_kld else None
        if self.hidden_layer_kld:
            self.model_hl: list[keras.Model] | None = build_hidden_models(model, self.hidden_layer_kld)
        else:
            self.model_hl = list(model_hl) if model_hl else None
        if self.model_hl is None:
            self.w_model_hl = None
        else:
            # float32 python floats: the reference's float64 default crashes when multiplied with float32 losses
            w = [1.0] * len(self.model_hl) if w_model_hl is None else [float(v) for v in w_model_hl]
            if len(w) != len(self.model_hl):
                raise ValueError(f"w_model_hl has {len(w)} weights for {len(self.model_hl)} hidden-layer models")
            self.w_model_hl = w
            for m in self.model_hl:
                m.trainable = False
        self.temperature = float(temperature)
        self.precision = check_precision(precision)
        # the copies scoring runs on (the originals themselves in float32); refreshed after fit
        self._compute_model = compute_copy(self.model, self.precision)
        self._compute_ae = compute_copy(self.ae, self.precision, float32_output=False)
        self.threshold = None if threshold is None else float(threshold)
        self.reference_scores: np.ndarray | None = None
        self.meta: dict[str, Any] = {
            "name": "AdversarialAE",
            "detector_type": "adversarial",
            "data_type": data_type,
            "online": False,
            "version": __version__,
        }
        self._scorer: FusedScorer | None = None
        self._bucket_sizes: tuple[int, ...] = BUCKET_SIZES

    # ------------------------------------------------------------------ properties
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-instance input shape of the classifier (what the stream validates requests against)."""
        return classifier.input_shape(self.model)

    @property
    def n_classes(self) -> int:
        return classifier.n_classes(self.model)

    def scorer(self, bucket_sizes: Sequence[int] | None = None, jit_compile: JitCompile = False) -> FusedScorer:
        """The compiled scorer (cached for the default buckets); the stream calls this and nothing else."""
        if bucket_sizes is None and not jit_compile:
            if self._scorer is None:
                self._scorer = self._make_scorer(self._bucket_sizes, False)
            return self._scorer
        return self._make_scorer(bucket_sizes or self._bucket_sizes, jit_compile)

    def stream_scorer(
        self, bucket_sizes: Sequence[int] | None = None, jit_compile: JitCompile = False
    ) -> ThresholdedScorer:
        """The scorer the streaming pipeline calls: thresholded, numpy in and out."""
        if self.threshold is None:
            raise ThresholdNotSetError(
                "the detector has no threshold: run infer_threshold before saving it for streaming"
            )
        # its own FusedScorer (never the cached one): the stream's thread and API callers stay independent
        return ThresholdedScorer(self._make_scorer(bucket_sizes or self._bucket_sizes, jit_compile), scorer_info(self))

    def _make_scorer(self, bucket_sizes: Sequence[int], jit_compile: JitCompile) -> FusedScorer:
        return FusedScorer(
            self._compute_model,
            self._compute_ae,
            self.model_hl,
            self.w_model_hl,
            self.temperature,
            bucket_sizes,
            jit_compile,
        )

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X: np.ndarray,
        loss_fn: Callable[..., Any] = loss_adv_ae,
        w_model: float = 1.0,
        w_recon: float = 0.0,
        optimizer: keras.optimizers.Optimizer | type | None = None,
        epochs: int = 20,
        batch_size: int = 128,
        verbose: bool = True,
        log_metric: tuple[str, keras.metrics.Metric] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] | keras.callbacks.Callback | None = None,
        preprocess_fn: Callable[[np.ndarray], Any] | None = None,
        *,
        validation_data: np.ndarray | None = None,
        patience: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> AdversarialAE:
        """Train the AE so that M(AE(x)) matches M(x); the classifier (and hidden extractors) stay frozen.

        ``loss_fn(x_true, x_pred, model=, model_hl=, w_model=, w_recon=, w_model_hl=, temperature=)``
        runs inside the backend's training step, so it must be written in keras.ops (as the default is).

        Keyword-only extras (the seed's signature is unchanged): with ``validation_data`` (clean instances
        the AE does not train on) the loss on them is recorded each epoch in ``val_history``; with
        ``patience`` as well, training stops once it has not improved for that many epochs, and the
        weights of the best epoch are restored. ``rng`` draws each epoch's batch order (a full permutation;
        alibi-detect shuffles through a 1,024-instance buffer, so its batches differ beyond that size), for
        reproducible runs. Per-batch losses are kept in ``batch_history``.
        """
        X = np.asarray(X)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"fit needs a non-empty batch of instances, got shape {X.shape}")
        loss_kwargs = {
            "model": self.model,
            "model_hl": self.model_hl,
            "w_model": float(w_model),
            "w_recon": float(w_recon),
            "w_model_hl": self.w_model_hl,
            "temperature": self.temperature,
        }
        how = Training(
            epochs=epochs,
            batch_size=batch_size,
            verbose=verbose,
            log_metric=log_metric,
            callbacks=callbacks,
            preprocess_fn=preprocess_fn,
            validation_data=validation_data,
            patience=patience,
            rng=rng,
        )
        record = train_ae(
            self.ae,
            X,
            lambda x_true, x_pred: loss_fn(x_true, x_pred, **loss_kwargs),
            make_optimizer(optimizer),
            how,
        )
        sync(self._compute_ae, self.ae)
        self._scorer = None  # JAX compiles the weights into the scorer: the next score uses the trained ones
        self.history, self.batch_history, self.val_history = record.history, record.batch_history, record.val_history
        return self

    # ------------------------------------------------------------------ threshold
    def infer_threshold(
        self, X: np.ndarray, threshold_perc: float = 99.0, margin: float = 0.0, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> float:
        """threshold = percentile(score(X), threshold_perc) + margin; keeps a score sample for drift checks."""
        if not 0.0 <= float(threshold_perc) <= 100.0:
            raise ValueError(f"threshold_perc must be in [0, 100], got {threshold_perc}")
        scores = self.score(X, batch_size=batch_size)
        self.threshold = float(np.percentile(scores, threshold_perc) + margin)
        self.reference_scores = reference_sample(scores)
        self.meta.pop("calibration", None)
        return self.threshold

    def calibrate_threshold(
        self, X_clean: np.ndarray, target_fpr: float, confidence: float = 0.95, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Calibration:
        """Set the threshold for a target false-positive rate on clean data the AE did not train on.

        ``infer_threshold`` keeps the seed's meaning (a percentile of the scores it is given); this is the
        path to a false-alarm rate an operator chooses. The result (threshold, expected rate and its
        upper bound) is kept in ``meta["calibration"]`` and saved with the detector."""
        scores = self.score(X_clean, batch_size=batch_size)
        calibration = calibrate(scores, target_fpr, confidence)
        self.threshold = calibration.threshold
        self.reference_scores = reference_sample(scores)
        self.meta["calibration"] = calibration.as_dict()
        return calibration

    # ------------------------------------------------------------------ scoring
    def score(self, X: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, return_predictions: bool = False):
        """Adversarial score KL(M(x)||M(AE(x))) (+ weighted hidden-layer KLs); optionally with (p, q)."""
        out = self.scorer()(X, None, batch_size, with_probs=return_predictions)
        if return_predictions:
            return out["instance_score"], out["p"], out["q"]
        return out["instance_score"]

    def _checked(self, X: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        if self.threshold is None:
            raise ThresholdNotSetError(
                "no threshold set: pass threshold= to AdversarialAE or call infer_threshold(X) on normal data first"
            )
        return self.scorer()(X, self.threshold, batch_size)

    def _response(self, out: dict[str, np.ndarray], return_instance_score: bool, **extra) -> dict:
        data = {
            "instance_score": out["instance_score"] if return_instance_score else None,
            "is_adversarial": out["is_adversarial"].astype(int),
            **extra,
        }
        return {"meta": copy.deepcopy(self.meta), "data": data}

    def predict(self, X: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, return_instance_score: bool = True) -> dict:
        return self._response(self._checked(X, batch_size), return_instance_score)

    def correct(
        self,
        X: np.ndarray,
        batch_size: int = DEFAULT_BATCH_SIZE,
        return_instance_score: bool = True,
        return_all_predictions: bool = True,
    ) -> dict:
        """Flagged instances take argmax M(AE(x)); the rest keep argmax M(x)."""
        out = self._checked(X, batch_size)
        return self._response(
            out,
            return_instance_score,
            corrected=out["corrected"],
            no_defense=out["no_defense"] if return_all_predictions else None,
            defense=out["defense"] if return_all_predictions else None,
        )
