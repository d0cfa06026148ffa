"""Fixtures of the torch-backend tests: a PyTorch digits CNN, trained once, and its exports."""

from __future__ import annotations

import pytest

from tests.torch_models import digits_data, export, trained_digits_cnn


@pytest.fixture(scope="session")
def digits_torch():
    x, y = digits_data()
    return {"x": x, "y": y, "cnn": trained_digits_cnn(x, y), "cnn_logits": trained_digits_cnn(x, y, logits=True)}


@pytest.fixture(scope="session")
def pt2_path(digits_torch, tmp_path_factory):
    return export(digits_torch["cnn"], tmp_path_factory.mktemp("clf") / "clf.pt2")
