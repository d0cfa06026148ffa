"""Which detector scores a record: the record's model, found where each platform puts it, then routes.

Order (first found wins): the protobuf ``model_name`` (Seldon Core v2, Triton's gRPC messages), the model
segment of a Seldon topic (``<prefix>.<ns>.model.<model>.inputs``), the CloudEvent's
``inferenceservicename`` (KServe's payload logger), a ``seldon-model`` or ``mlserver-model`` header. A
model that names a detector of the repository is scored by it; ``detector.routes`` maps anything else
(first match wins). A record no detector serves is not bad input: the loop skips and counts it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from adae_stream.codecs import Request, header

SELDON_INPUTS = re.compile(r"\.model\.([^.]+)\.inputs$")
MODEL_HEADERS = ("seldon-model", "mlserver-model")
CE_SERVICE = "inferenceservicename"


def model_of(request: Request) -> str | None:
    """The model a request was sent to, or None when nothing in the record says."""
    if request.model:
        return request.model
    seldon = SELDON_INPUTS.search(request.record.topic)
    if seldon:
        return seldon.group(1)
    if request.envelope is not None:
        service = request.envelope.attributes.get(CE_SERVICE)
        if isinstance(service, str) and service:
            return service
    for name in MODEL_HEADERS:
        raw = header(request.record, name)
        if raw:
            return raw.decode("utf-8", "replace")
    return None


@dataclass(frozen=True)
class Route:
    """``{detector: NAME, model: NAME}`` or ``{detector: NAME, topic: REGEX}`` of detector.routes."""

    detector: str
    model: str | None = None
    topic: re.Pattern[str] | None = None

    def matches(self, model: str | None, topic: str) -> bool:
        if self.model is not None:
            return model == self.model
        return self.topic is not None and self.topic.search(topic) is not None


def parse_routes(routes: Sequence[dict[str, str]]) -> list[Route]:
    """detector.routes, checked already by the config (one of model / topic, a valid regex)."""
    return [
        Route(r["detector"], r.get("model"), re.compile(r["topic"]) if r.get("topic") is not None else None)
        for r in routes
    ]


class Router:
    """model -> detector name. ``default`` (the single detector of ``detector.path``) takes everything."""

    def __init__(self, routes: Sequence[Route] = (), default: str | None = None) -> None:
        self.routes = list(routes)
        self.default = default

    def detector_for(self, request: Request, serving: Collection[str]) -> str | None:
        if self.default is not None:
            return self.default
        model = model_of(request)
        if model is not None and model in serving:
            return model
        topic = request.record.topic
        for route in self.routes:
            if route.matches(model, topic):
                return route.detector if route.detector in serving else None
        return None
