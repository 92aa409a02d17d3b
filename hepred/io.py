"""Atomic file output: a declared output appears complete or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _suffixes(path: Path) -> str:
    # Keep compound suffixes such as .nii.gz so that writers pick the right format.
    return "".join(path.suffixes)


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; move it into place only on success.

    The temporary file sits in the same directory so that ``os.replace`` is atomic, and it
    keeps the final suffix so that format-sniffing writers (SimpleITK, nibabel, numpy)
    behave. On any exception the temporary file is removed and nothing is left behind.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.name.split('.')[0]}.", suffix=".tmp" + _suffixes(final_path), dir=final_path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    # mkstemp makes the file private (0600); outputs should be readable like any other file.
    os.chmod(tmp_path, 0o666 & ~_current_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame atomically, without the index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_sitk(path: str | Path, image) -> None:
    """Write a SimpleITK image atomically; a .nii.gz is gzipped at level 1.

    SimpleITK ignores the compression level for NIfTI and its default level made the gzip
    write 80 % of a DICOM conversion; level 1 is three times faster for 8 % larger files.
    """
    import gzip
    import shutil

    import SimpleITK as sitk

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".nii.gz"):
            raw = tmp.with_name(tmp.name[: -len(".gz")])
            try:
                sitk.WriteImage(image, str(raw), useCompression=False)
                # mtime=0 and no file name in the header: the same image gives the same bytes.
                with open(raw, "rb") as source, open(tmp, "wb") as sink:
                    with gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=sink, mtime=0) as target:
                        shutil.copyfileobj(source, target, length=1 << 22)
            finally:
                raw.unlink(missing_ok=True)
        else:
            sitk.WriteImage(image, str(tmp), useCompression=True)


def save_pil(path: str | Path, image) -> None:
    """Save a PIL image atomically as PNG."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="png")


def save_figure(path: str | Path, figure) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
