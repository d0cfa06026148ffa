"""`adae-stream demo`: placeholder registration, replaced by the full demo below."""
from __future__ import annotations

import argparse


def register_demo(sub: argparse._SubParsersAction) -> None:
    pass
