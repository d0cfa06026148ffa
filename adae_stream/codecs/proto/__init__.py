"""Generated protobuf classes of the Open Inference Protocol (see open_inference.proto)."""
