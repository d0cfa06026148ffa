"""Traffic as the platforms put it on Kafka, and the service's own metrics as a dict, for broker tests."""

from __future__ import annotations

import urllib.request

import numpy as np
import tritonclient.grpc.service_pb2 as triton_pb


def seldon_request(x, rid: str, raw: bool = True, framing: bytes = b"", model: str = "digits") -> bytes:
    """A Seldon Core v2 request: an OIP ModelInferRequest built with Triton's own generated classes."""
    msg = triton_pb.ModelInferRequest(model_name=model, id=rid)
    tensor = msg.inputs.add(name="input-0", datatype="FP32", shape=list(x.shape))
    if raw:
        msg.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return framing + msg.SerializeToString()


def metrics(port: int) -> dict[str, float]:
    """Every adae_ sample of /metrics, keyed by its name and labels as exposed."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("adae_")
    }
