"""Writing the files people ask for (PDFs, previews, .eml files, CSVs): whole or not at all.

Each file is written beside its destination and renamed into place, so nobody
reads half a file and a failure leaves nothing behind. A path that cannot be
written is for the user to fix, so it is a CampaignError naming the path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from engine.errors import CampaignError


def make_folder(path: str | Path) -> Path:
    """The folder `path`, created with its parents unless it exists."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CampaignError(f"{path}: is a file, not a folder") from None
    except OSError as exc:
        raise CampaignError(f"{path}: cannot create the folder: {exc.strerror}") from None
    return path


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: `path` appears, whole, when the block ends without error."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    except OSError as exc:
        raise CampaignError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a folder where the file should go
            raise CampaignError(f"{path}: cannot write: {exc.strerror}") from None
        raise


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)
