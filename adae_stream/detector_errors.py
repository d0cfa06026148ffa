"""Start-up errors the CLI turns into one clear line (imported lazily: detector errors pull in TF)."""
from __future__ import annotations


def startup_errors() -> tuple[type[BaseException], ...]:
    from adae_stream.detector.adversarial_ae import ThresholdNotSetError
    from adae_stream.detector.saving import DetectorLoadError
    from adae_stream.errors import PipelineError
    from adae_stream.stream.broker import BrokerError

    return (DetectorLoadError, ThresholdNotSetError, PipelineError, BrokerError)
