"""The MNIST IDX files, read with numpy (shared by the reference scripts)."""

import gzip
import struct
from pathlib import Path

import numpy as np


def read_idx(path: Path, magic_expected: int) -> np.ndarray:
    """Images (count, rows, cols) for magic 2051, labels (count,) for 2049; gzipped or raw."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic != magic_expected:
        raise ValueError(f"{path}: magic {magic}, expected {magic_expected}")
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        arr = np.frombuffer(data, dtype=np.uint8, offset=16)
        if arr.size != count * rows * cols:
            raise ValueError(f"{path}: truncated image data")
        return arr.reshape(count, rows, cols)
    arr = np.frombuffer(data, dtype=np.uint8, offset=8)
    if arr.size != count:
        raise ValueError(f"{path}: truncated label data")
    return arr


def load_raw(data_dir: Path, prefix: str):
    """uint8 images (count, rows, cols) and labels of one split ("train" or "t10k")."""
    images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz", 2051)
    labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz", 2049)
    if len(images) != len(labels):
        raise ValueError(f"{prefix}: {len(images)} images but {len(labels)} labels")
    return images, labels
