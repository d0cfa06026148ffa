"""adae-stream: adversarial detection and correction (adversarial auto-encoder) for streaming ML traffic.

The detector pulls in TensorFlow; the stream, config and monitoring modules do not. The public names are
resolved lazily so that importing ``adae_stream.stream`` (or the CLI's ``--help``) stays fast and TF-free.
"""

from __future__ import annotations

from adae_stream.version import __version__

__all__ = ["AdversarialAE", "__version__", "load_detector", "save_detector"]


def __getattr__(name: str):
    if name == "AdversarialAE":
        from adae_stream.detector.adversarial_ae import AdversarialAE

        return AdversarialAE
    if name in ("save_detector", "load_detector"):
        from adae_stream.detector import saving

        return getattr(saving, name)
    raise AttributeError(f"module 'adae_stream' has no attribute {name!r}")
