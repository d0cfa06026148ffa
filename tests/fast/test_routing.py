"""Which detector a record reaches: the model named where each platform puts it, then detector.routes."""

from __future__ import annotations

import numpy as np
import pytest

from adae_stream.codecs import RawRecord, decode
from adae_stream.codecs.proto.open_inference_pb2 import ModelInferRequest
from adae_stream.codecs.records import Envelope
from adae_stream.config import load_config
from adae_stream.errors import ConfigError
from adae_stream.stream.routing import Router, model_of, parse_routes

X = np.zeros((1, 3), np.float32)


def proto(model: str = "") -> bytes:
    msg = ModelInferRequest(model_name=model, id="r1")
    tensor = msg.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([0.0, 0.0, 0.0])
    return msg.SerializeToString()


def request(topic: str = "in", value: bytes | None = None, headers=()):
    return decode(RawRecord(topic, 0, 0, None, value or proto(), list(headers)), None, 1 << 20)


def test_the_body_names_the_model_first_then_the_topic_then_the_event_then_headers():
    body = request("seldon.ns.model.fromtopic.inputs", proto("frombody"), [("seldon-model", b"fromheader")])
    assert model_of(body) == "frombody"
    topic = request("seldon.ns.model.fromtopic.inputs", proto(), [("seldon-model", b"fromheader")])
    assert model_of(topic) == "fromtopic"
    event = request("in", proto(), [("mlserver-model", b"fromheader")])
    event.envelope = Envelope("binary", {"id": "1", "inferenceservicename": "fromevent"})
    assert model_of(event) == "fromevent"
    assert model_of(request("in", proto(), [("mlserver-model", b"fromheader")])) == "fromheader"
    assert model_of(request("in", proto())) is None


def test_decoding_without_a_detector_keeps_the_declared_shape():
    req = request("in", proto("m"))
    assert req.instances.shape == (1, 3) and req.model == "m"


def test_names_then_routes_in_order_and_unserved_detectors_route_nowhere():
    routes = parse_routes(
        [
            {"detector": "c", "topic": r"\.model\.legacy\."},
            {"detector": "a", "model": "alias"},
            {"detector": "gone", "model": "old"},
        ]
    )
    router = Router(routes)
    serving = {"a", "b", "c"}
    assert router.detector_for(request("seldon.ns.model.b.inputs"), serving) == "b"  # by name
    assert router.detector_for(request("seldon.ns.model.legacy.inputs"), serving) == "c"  # by topic
    assert router.detector_for(request("in", proto("alias")), serving) == "a"  # by model route
    assert router.detector_for(request("in", proto("old")), serving) is None  # its detector is not served
    assert router.detector_for(request("seldon.ns.model.z.inputs"), serving) is None  # unrouted
    assert Router(default="only").detector_for(request("seldon.ns.model.z.inputs"), {"only"}) == "only"


@pytest.mark.parametrize(
    "detector, message",
    [
        ({"path": "x", "repository": "y"}, "set one of them"),
        ({"repository": "y", "routes": [{"detector": "a"}]}, r"routes\[0\]"),
        ({"repository": "y", "routes": [{"detector": "a", "model": "m", "topic": "t"}]}, r"routes\[0\]"),
        ({"repository": "y", "routes": [{"detector": "a", "topic": "("}]}, "not a valid regular expression"),
        ({"path": "x", "routes": [{"detector": "a", "model": "m"}]}, "detector.repository"),
        ({"repository": "y", "poll_s": 0}, "detector.poll_s"),
    ],
)
def test_repository_settings_are_checked_at_start(detector, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={}, overrides={"detector": detector})
