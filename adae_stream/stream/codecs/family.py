"""What a wire family is to the codecs: one record of functions and names, built by the family's module.

Adding a family is a module that ends in ``FAMILY = WireFamily(...)`` and one line in
``codecs.FAMILIES``; recognition, answering, flagged captures, the client-side encoder and reading
answers back all look the family up there, so nothing else has to learn its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from adae_stream.stream.codecs.records import RawRecord, Request

Headers = list[tuple[str, bytes]]
Result = dict[str, np.ndarray]  # the fields to publish, in RESULT_DTYPES order
Info = dict[str, Any]  # model_name, model_version, threshold, detector ids and ANSWER_PARAMETERS


@dataclass(frozen=True)
class WireFamily:
    name: str
    # Content-types that name the family on a request or an answer; a record whose content-type is in
    # no family's set (and says something: not absent, not octet-stream) is refused, not guessed at.
    content_types: frozenset[str]
    # The Request.fmt values the family's decoder gives and its encoder answers in.
    answers: tuple[str, ...]
    # The formats encode_request builds (what producers send), each named on `adae-stream produce`.
    request_formats: tuple[str, ...]
    # Whether a record with no telling content-type is (perhaps) of this family, from its body or its
    # headers. Several may say yes (a protobuf can start with bytes that read as JSON): the decoders are
    # tried in registry order, the next one only while the previous found the body unreadable.
    sniff: Callable[[RawRecord, bytes], bool]
    decode: Callable[[RawRecord, bytes, tuple[int, ...] | None, int], Request]
    # (body, content-type, extra headers) of the answer to a request.
    encode: Callable[[Request, Result, Info], tuple[bytes, str, Headers]]
    # (body, content-type) of a flagged capture: the instances (float32, little-endian) and their result.
    encode_flagged: Callable[[Request, np.ndarray, Result, Info], tuple[bytes, str]]
    # (body, content-type, extra headers) of a request for x in one of request_formats.
    encode_request: Callable[[np.ndarray, str, str, str], tuple[bytes, str, Headers]]
    # {'id', field: array, ...} of an answer; headers by lower-cased name. Raises whatever its parser does.
    decode_response: Callable[[bytes, Mapping[str, bytes]], dict[str, Any]]
    # Seldon Core v2's seldon-infer-type for the family's answers ("json/inferModelResponse"); its prefix
    # before "/" names the family on requests. Empty for a family Seldon does not carry.
    seldon_answer_type: str = ""

    @property
    def seldon_prefix(self) -> str:
        return self.seldon_answer_type.partition("/")[0] + "/" if self.seldon_answer_type else ""
