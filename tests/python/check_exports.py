#!/usr/bin/env python3
"""The exports of `mnist-cnn export`, read by the tools they are written for (run by .ci/exchange).

For three models (the tutorial's CNN imported from Keras, an MLP and a colour CNN trained
briefly here):

- ONNX: `onnx.checker` accepts the file (full check, with shape inference); ONNX Runtime runs it
  on 1,000 test images at batch sizes 1 and 64, and its probabilities equal `predict --json`'s
  within 1e-5; the batch dimension is dynamic; the metadata holds the class names and pipeline.
- safetensors: the `safetensors` package reads the file; its tensors have the names and shapes
  of the README's torch.nn.Module's state_dict; a forward pass in numpy from the file (pixels /
  255, as the metadata says) gives `predict --json`'s probabilities within 1e-5.
- PyTorch itself, when `torch` is installed: the README's module loads the file with
  `load_state_dict(strict=True)` and gives the same probabilities.

    python tests/python/check_exports.py --binary target/release/mnist-cnn
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches" / "reference"))
from mnist_idx import read_idx  # noqa: E402

IMAGES = 1000
TOLERANCE = 1e-5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "mnist-cnn")
    p.add_argument("--images", type=int, default=IMAGES)
    return p.parse_args()


class Tool:
    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.workdir = workdir

    def run(self, *args, data_dir=None):
        command = [str(self.binary), "--quiet"]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        command += [str(a) for a in args]
        result = subprocess.run(command, cwd=self.workdir, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
        return result.stdout

    def predict(self, model_dir, count, data_dir=None):
        """predict --json's probabilities for the first `count` test images, [count, classes]."""
        indices = ",".join(str(i) for i in range(count))
        out = json.loads(self.run("--json", "predict", "--model-dir", model_dir, "--index", indices,
                                  "--top", "10", data_dir=data_dir))
        rows = []
        for item in out["predictions"]:
            row = [0.0] * len(item["top"])
            for entry in item["top"]:
                row[entry["class"]] = entry["probability"]
            rows.append(row)
        return np.array(rows, dtype=np.float64)


def test_images(data_dir: Path, count: int) -> np.ndarray:
    """The first `count` test images as float32 [N, C, H, W], raw pixel values 0-255."""
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"]:
        path = data_dir / name
        if path.exists():
            images = read_idx(path, None)
            break
    else:
        raise SystemExit(f"no test images in {data_dir}")
    images = images[:count].astype(np.float32)
    if images.ndim == 3:
        return images[:, np.newaxis, :, :]
    return images.transpose(0, 3, 1, 2)  # colour IDX files are channels-last


def check_onnx(path: Path, images: np.ndarray, expected: np.ndarray, classes: int):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", 0) in (17, 18), opsets
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value, f"the batch is not dynamic: {batch}"
    metadata = {p.key: p.value for p in model.metadata_props}
    assert len(json.loads(metadata["class_names"])) == classes, metadata
    assert metadata["pipeline"], metadata
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch_size in (1, 64):
        outputs = [session.run(["probabilities"], {"pixels": images[i:i + batch_size]})[0]
                   for i in range(0, len(images), batch_size)]
        got = np.concatenate(outputs).astype(np.float64)
        difference = np.abs(got - expected).max()
        assert difference <= TOLERANCE, f"{path.name} batch {batch_size}: differs by {difference}"
        print(f"  onnxruntime {ort.__version__}, batch {batch_size:>2}: "
              f"largest difference from predict --json {difference:.2e}")


def torch_names(architecture: str, channels: int, rows: int, cols: int, classes: int):
    """The state_dict of the README's torch.nn.Module: names and shapes."""
    dense_inputs = 32 * (rows // 4) * (cols // 4) if architecture == "cnn" else channels * rows * cols
    names = {}
    if architecture == "cnn":
        names.update({"conv1.weight": (16, channels, 3, 3), "conv1.bias": (16,),
                      "conv2.weight": (32, 16, 3, 3), "conv2.bias": (32,)})
    names.update({"dense1.weight": (128, dense_inputs), "dense1.bias": (128,),
                  "dense2.weight": (128, 128), "dense2.bias": (128,),
                  "output.weight": (classes, 128), "output.bias": (classes,)})
    return names


def conv3x3_same(x, weight, bias):
    """x [N, C, H, W], weight [F, C, 3, 3]: PyTorch's Conv2d(padding=1)."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w), dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            window = padded[:, :, dy:dy + h, dx:dx + w]
            out += np.einsum("nchw,fc->nfhw", window, weight[:, :, dy, dx])
    return out + bias[None, :, None, None]


def max_pool_2x2(x):
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def numpy_forward(tensors, architecture, pixels):
    t = {k: v.astype(np.float64) for k, v in tensors.items()}
    x = pixels.astype(np.float64) / 255.0
    if architecture == "cnn":
        x = max_pool_2x2(np.maximum(conv3x3_same(x, t["conv1.weight"], t["conv1.bias"]), 0))
        x = max_pool_2x2(np.maximum(conv3x3_same(x, t["conv2.weight"], t["conv2.bias"]), 0))
    x = x.reshape(len(x), -1)
    x = np.maximum(x @ t["dense1.weight"].T + t["dense1.bias"], 0)
    x = np.maximum(x @ t["dense2.weight"].T + t["dense2.bias"], 0)
    logits = x @ t["output.weight"].T + t["output.bias"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def check_safetensors(path: Path, images: np.ndarray, expected: np.ndarray):
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    architecture = metadata["architecture"]
    channels, rows, cols = json.loads(metadata["input_shape"])
    classes = len(json.loads(metadata["class_names"]))
    assert metadata["pixel_scale"] == "1/255", metadata
    tensors = load_file(str(path))
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    assert shapes == torch_names(architecture, channels, rows, cols, classes), shapes
    assert all(t.dtype == np.float32 for t in tensors.values())
    got = numpy_forward(tensors, architecture, images)
    difference = np.abs(got - expected).max()
    assert difference <= TOLERANCE, f"{path.name}: numpy differs by {difference}"
    print(f"  numpy forward pass from the safetensors file: largest difference {difference:.2e}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  (torch is not installed: the README module's strict load is not checked here)")
        return
    check_torch(path, architecture, channels, rows, cols, classes, images, expected)


def check_torch(path, architecture, channels, rows, cols, classes, images, expected):
    import torch
    from safetensors.torch import load_file as torch_load
    from torch import nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if architecture == "cnn":
                self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
                self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
                inputs = 32 * (rows // 4) * (cols // 4)
            else:
                inputs = channels * rows * cols
            self.dense1 = nn.Linear(inputs, 128)
            self.dense2 = nn.Linear(128, 128)
            self.output = nn.Linear(128, classes)

        def forward(self, x):
            if architecture == "cnn":
                x = F.max_pool2d(F.relu(self.conv1(x)), 2)
                x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = torch.flatten(x, 1)
            x = F.relu(self.dense1(x))
            x = F.relu(self.dense2(x))
            return F.softmax(self.output(x), dim=1)

    model = Net()
    model.load_state_dict(torch_load(str(path)), strict=True)
    with torch.no_grad():
        got = model(torch.from_numpy(images) / 255).double().numpy()
    difference = np.abs(got - expected).max()
    assert difference <= TOLERANCE, f"{path.name}: torch differs by {difference}"
    print(f"  torch {torch.__version__} load_state_dict(strict=True): largest difference {difference:.2e}")


def colour_data(directory: Path, rows=16, cols=16, classes=3, train=600, test=200):
    """A small colour data set in IDX (rank 4, channels last): each class a dominant colour."""
    rng = np.random.default_rng(7)

    def split(count):
        labels = rng.integers(0, classes, count).astype(np.uint8)
        images = rng.integers(0, 120, (count, rows, cols, 3)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, :, :, label] += 120
        return images, labels

    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images, labels = split(count)
        header = np.array([0x0804, count, rows, cols, 3], dtype=">u4").tobytes()
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([0x0801, count], dtype=">u4").tobytes()
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    (directory / "classes.txt").write_text("red\ngreen\nblue\n")


def main():
    args = parse_args()
    started = time.perf_counter()
    mnist = ROOT / "data" / "mnist"
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        tool = Tool(args.binary.resolve(), work)
        colour = work / "colour"
        colour_data(colour)
        tool.run("import-model", ROOT / "tests/fixtures/keras/cnn.keras", "--out", "keras-cnn")
        tool.run("train", "--model", "mlp", "--epochs", "1", "--limit", "3000", "--out", "mlp", data_dir=mnist)
        tool.run("train", "--epochs", "2", "--out", "colour", "--validation-split", "0", data_dir=colour)
        models = [("keras-cnn", mnist, 10), ("mlp", mnist, 10), ("colour", colour, 3)]
        for name, data_dir, classes in models:
            count = min(args.images, 200 if data_dir == colour else args.images)
            print(f"{name}: {count} test images")
            images = test_images(data_dir, count)
            expected = tool.predict(name, count, data_dir=data_dir)
            tool.run("export", "--model-dir", name, "--format", "onnx", "-o", f"{name}.onnx")
            check_onnx(work / f"{name}.onnx", images, expected, classes)
            tool.run("export", "--model-dir", name, "--format", "safetensors", "-o", f"{name}.safetensors")
            check_safetensors(work / f"{name}.safetensors", images, expected)
    print(f"the exports agree with predict --json ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
