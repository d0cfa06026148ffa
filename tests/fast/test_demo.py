"""The README's first command is the demo."""

from __future__ import annotations

from tests.process_helpers import readme_first_command


def test_readme_first_command_is_make_demo():
    assert readme_first_command() == "make demo"
