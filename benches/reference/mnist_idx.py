"""The MNIST IDX files, read with numpy (shared by the reference scripts)."""

import gzip
import struct
from pathlib import Path

import numpy as np


def read_idx(path: Path, magic_expected=None) -> np.ndarray:
    """Images (count, rows, cols) for magic 2051, colour images (count, rows, cols, channels)
    for 2052, labels (count,) for 2049; gzipped or raw. `magic_expected` None takes any."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic_expected is not None and magic != magic_expected:
        raise ValueError(f"{path}: magic {magic}, expected {magic_expected}")
    dims = {2051: 2, 2052: 3, 2049: 0}.get(magic)
    if dims is None:
        raise ValueError(f"{path}: magic {magic} is not an IDX file of images or labels")
    shape = (count,) + struct.unpack(">" + "I" * dims, data[8:8 + 4 * dims])
    arr = np.frombuffer(data, dtype=np.uint8, offset=8 + 4 * dims)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated data")
    return arr.reshape(shape)


def load_raw(data_dir: Path, prefix: str):
    """uint8 images (count, rows, cols) and labels of one split ("train" or "t10k")."""
    images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz", 2051)
    labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz", 2049)
    if len(images) != len(labels):
        raise ValueError(f"{prefix}: {len(images)} images but {len(labels)} labels")
    return images, labels
