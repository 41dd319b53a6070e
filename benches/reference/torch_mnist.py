#!/usr/bin/env python3
"""PyTorch reference for the mnist-cnn benchmark.

Trains the same CNN as the Rust/burn CLI and keras_mnist.py on the MNIST IDX files in
data/mnist, on the CPU in eager mode, and reports per-epoch training throughput, evaluation
throughput, test loss/accuracy and peak RSS (human table on stdout, optional JSON file in the
same format as keras_mnist.py, with key `torch` for the version).

Model (223,434 parameters, Keras's initialisation: Glorot-uniform weights, zero biases):
  Conv2d(1->16, 3, padding 1) + ReLU -> MaxPool2d(2) -> Conv2d(16->32, 3, padding 1) + ReLU
  -> MaxPool2d(2) -> Flatten -> Linear(1568->128) + ReLU -> Linear(128->128) + ReLU
  -> Linear(128->10), cross-entropy on the logits (= softmax + categorical cross-entropy).
Adam(lr=1e-3, eps=1e-7 as Keras), pixels / 255, batches reshuffled every epoch (last batch
partial, as Keras's fit). Data loading and scaling happen before the first timed epoch.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

EXPECTED_PARAMS = 223_434
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="directory with the four gzipped MNIST IDX files (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads (intra-op, OpenMP/MKL/oneDNN) (default: %(default)s)")
    p.add_argument("--inter-op-threads", type=int, default=1,
                   help="torch.set_num_interop_threads; an eager sequential model has no "
                        "inter-op parallelism to use (default: %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="limit each epoch to this many batches (smoke tests)")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the training set held out (the last one, as Keras); "
                        "validation time is then included in the epoch time (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--flush-denormal", action="store_true",
                   help="torch.set_flush_denormal(True) (off by default, as in PyTorch)")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON to this path")
    return p.parse_args()


args = parse_args()

# Must be set before torch is imported, so OpenMP/MKL size their pools to --threads.
os.environ["OMP_NUM_THREADS"] = str(args.threads)
os.environ["MKL_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(args.inter_op_threads)

from mnist_idx import load_raw  # noqa: E402
from report import report  # noqa: E402


def load_split(data_dir: Path, prefix: str):
    images, labels = load_raw(data_dir, prefix)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1).contiguous()  # N,1,28,28
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def build_model() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128), nn.ReLU(),
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)  # Keras's glorot_uniform
            nn.init.zeros_(layer.bias)
    return model


def evaluate(model, loss_fn, x, y, batch_size):
    """Mean loss and accuracy over (x, y), as Keras's model.evaluate."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            target = y[i:i + batch_size]
            loss_sum += loss_fn(logits, target).item() * len(target)
            correct += (logits.argmax(1) == target).sum().item()
    model.train()
    return loss_sum / len(x), correct / len(x)


def main():
    torch.manual_seed(args.seed)
    if args.flush_denormal:
        torch.set_flush_denormal(True)

    t0 = time.perf_counter()
    x_all, y_all = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    load_seconds = time.perf_counter() - t0

    # Keras's validation_split holds out the *last* fraction, unshuffled.
    n_fit = len(x_all) - int(len(x_all) * args.validation_split)
    x_train, y_train = x_all[:n_fit], y_all[:n_fit]
    x_val, y_val = x_all[n_fit:], y_all[n_fit:]

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == EXPECTED_PARAMS, f"model has {n_params} params, expected {EXPECTED_PARAMS}"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()

    steps_full = -(-n_fit // args.batch_size)
    steps = steps_full
    if args.steps_per_epoch is not None and args.steps_per_epoch < steps_full:
        steps = args.steps_per_epoch
    images_per_epoch = min(n_fit, steps * args.batch_size)

    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    epochs = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n_fit, generator=generator)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for step in range(steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
        if len(x_val):
            evaluate(model, loss_fn, x_val, y_val, args.eval_batch_size)
        seconds = time.perf_counter() - t0
        epochs.append({
            "epoch": epoch + 1,
            "seconds": seconds,
            "images_per_second": images_per_epoch / seconds,
            "loss": loss_sum.item() / images_per_epoch,
            "accuracy": correct.item() / images_per_epoch,
        })

    timed = epochs[1:] if len(epochs) >= 3 else epochs
    sec_median = statistics.median(e["seconds"] for e in timed)
    ips_median = statistics.median(e["images_per_second"] for e in timed)

    # Evaluation: one warm-up pass, then one timed pass (as keras_mnist.py).
    evaluate(model, loss_fn, x_test, y_test, args.eval_batch_size)
    t0 = time.perf_counter()
    test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test, args.eval_batch_size)
    eval_seconds = time.perf_counter() - t0
    eval_ips = len(x_test) / eval_seconds

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    result = {
        "system": "pytorch",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "flush_denormal": args.flush_denormal,
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps_per_epoch,
        "images_per_epoch": images_per_epoch,
        "validation_split": args.validation_split,
        "seed": args.seed,
        "params": n_params,
        "data_load_seconds": load_seconds,
        "epochs": epochs,
        "median_excludes_first_epoch": len(epochs) >= 3,
        "train_seconds_per_epoch_median": sec_median,
        "train_images_per_second_median": ips_median,
        "eval_batch_size": args.eval_batch_size,
        "eval_seconds": eval_seconds,
        "eval_images_per_second": eval_ips,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "peak_rss_mb": peak_rss_mb,
    }

    report(result, f"torch {torch.__version__}  threads intra={result['threads']} "
                   f"inter={result['inter_op_threads']}  mkldnn={result['mkldnn']}  "
                   f"batch={args.batch_size}  params={n_params:,}", args.json)


if __name__ == "__main__":
    sys.exit(main())
