"""What a wire family is to the codecs: a module with these names, checked by mypy where it is registered.

Adding a family is a module that defines them and one line in ``codecs.FAMILIES``; recognition,
answering, flagged captures, the client-side encoder and reading answers back all find the family
there, so nothing else has to learn its name. (Any object with these attributes will do: the registry
test adds a class.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from adae_stream.codecs.records import RawRecord, Request

Headers = list[tuple[str, bytes]]
Result = dict[str, np.ndarray]  # the fields to publish, in RESULT_DTYPES order
Info = dict[str, Any]  # model_name, model_version, threshold, detector ids and ANSWER_PARAMETERS


class WireFamily(Protocol):
    @property
    def NAME(self) -> str: ...

    # Content-types that name the family on a request or an answer; a record whose content-type is in
    # no family's set (and says something: not absent, not octet-stream) is refused, not guessed at.
    @property
    def CONTENT_TYPES(self) -> frozenset[str]: ...

    # The Request.fmt values the family's decoder gives and its encoder answers in.
    @property
    def ANSWERS(self) -> tuple[str, ...]: ...

    # The formats encode_request builds (what producers send), each named on `adae-stream produce`.
    @property
    def REQUEST_FORMATS(self) -> tuple[str, ...]: ...

    # Seldon Core v2's seldon-infer-type for the family's answers ("json/inferModelResponse"); its prefix
    # up to "/" names the family on requests. Empty for a family Seldon does not carry.
    @property
    def SELDON_ANSWER_TYPE(self) -> str: ...

    def sniff(self, record: RawRecord, data: bytes) -> bool:
        """Whether a record with no telling content-type is (perhaps) of this family, from its body or
        headers. Several may say yes (a protobuf can start with bytes that read as JSON): their decoders
        are tried in registry order, the next only while the previous found the body unreadable."""
        ...

    def decode(self, record: RawRecord, data: bytes, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
        """The request, or a DecodeError; reason "decode" means the body is not of this family at all."""
        ...

    def encode(self, request: Request, result: Result, info: Info) -> tuple[bytes, str, Headers]:
        """(body, content-type, extra headers) of the answer to a request."""
        ...

    def encode_flagged(self, request: Request, x: np.ndarray, result: Result, info: Info) -> tuple[bytes, str]:
        """(body, content-type) of a flagged capture: the instances (float32, little-endian) and their result."""
        ...

    def encode_request(self, x: np.ndarray, fmt: str, request_id: str, input_name: str) -> tuple[bytes, str, Headers]:
        """(body, content-type, extra headers) of a request for x in one of REQUEST_FORMATS."""
        ...

    def decode_response(self, value: bytes, headers: Mapping[str, bytes]) -> dict[str, Any]:
        """{'id', field: array, ...} of an answer; headers by lower-cased name. Raises what its parser does."""
        ...
