"""Files replaced whole or not at all: written beside their target under a name no other writer uses, then
renamed over it. A crash at any point leaves the old file or the new one, never a mix, and two writers in
one process (the demo's decision thread and its final check) never write through one temporary file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
