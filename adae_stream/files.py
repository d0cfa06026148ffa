"""Files replaced whole or not at all: written beside their target under a name no other writer uses, then
renamed over it. A crash at any point leaves the old file or the new one, never a mix, and two writers in
one process (the demo's decision thread and its final check) never write through one temporary file."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

from adae_stream.errors import ConfigError


def replace_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hold_lock(path: Path, holder: str) -> IO:
    """An exclusive lock on ``path`` (created with its directory), held for the life of the returned file:
    one ``holder`` per directory (two would write over each other's state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"another {holder} already runs for {path.parent} (it holds {path.name})") from None
    return handle
