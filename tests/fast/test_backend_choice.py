"""The Keras backend is chosen once per process, before Keras is imported, and never silently changed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from adae_stream.errors import ConfigError


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environ)


def test_the_config_key_wins_over_the_environment_and_tensorflow_is_the_default():
    code = (
        "from adae_stream.detector.backend import select; import os; print(select({!r}), os.environ['KERAS_BACKEND'])"
    )
    assert _run(code.format("jax"), KERAS_BACKEND="torch").stdout.split() == ["jax", "jax"]
    assert _run(code.format(None), KERAS_BACKEND="torch").stdout.split() == ["torch", "torch"]
    assert _run(code.format(None)).stdout.split() == ["tensorflow", "tensorflow"]


def test_a_process_already_running_keras_refuses_another_backend():
    done = _run(
        "import keras\nfrom adae_stream.detector.backend import select\nprint(select('tensorflow'))\nselect('torch')"
    )
    assert done.stdout.strip() == "tensorflow"  # the one already running is accepted
    assert done.returncode != 0
    assert "already runs Keras on 'tensorflow'" in done.stderr and "once per process" in done.stderr


def test_an_unknown_backend_is_a_config_error():
    from adae_stream.detector.backend import select

    with pytest.raises(ConfigError, match="unknown Keras backend 'theano'"):
        select("theano")
