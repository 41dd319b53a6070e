#!/usr/bin/env python3
"""Keras/TensorFlow reference for the mnist-cnn benchmark.

Trains the same CNN as the Rust/burn CLI on the MNIST IDX files in data/mnist,
on the CPU, and reports per-epoch training throughput, evaluation throughput,
test loss/accuracy and peak RSS (human table on stdout, optional JSON file).

Model (223,434 parameters):
  Conv2D(16, 3, same, relu) -> MaxPool(2) -> Conv2D(32, 3, same, relu) -> MaxPool(2)
  -> Flatten -> Dense(128, relu) -> Dense(128, relu) -> Dense(10, softmax)
Adam(lr=1e-3), categorical cross-entropy, pixels / 255, one-hot labels.
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
                   help="TF intra-op threads (default: %(default)s)")
    p.add_argument("--inter-op-threads", type=int, default=None,
                   help="TF inter-op threads (default: same as --threads, which is what TF "
                        "picks by itself on a machine with that many cores)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="limit each epoch to this many batches (smoke tests)")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the training set held out; note that validation time "
                        "is then included in the epoch time (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                   help="Keras compile(jit_compile=...); 'auto' is the Keras default and resolves "
                        "to False (no XLA) on a CPU-only machine (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON to this path")
    return p.parse_args()


args = parse_args()
inter_threads = args.inter_op_threads if args.inter_op_threads is not None else args.threads

# Must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["OMP_NUM_THREADS"] = str(args.threads)
os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
os.environ["TF_NUM_INTEROP_THREADS"] = str(inter_threads)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(inter_threads)

import keras  # noqa: E402

from mnist_idx import load_raw  # noqa: E402
from report import report  # noqa: E402


def load_split(data_dir: Path, prefix: str):
    images, labels = load_raw(data_dir, prefix)
    x = (images.astype(np.float32) / 255.0)[..., np.newaxis]
    y = keras.utils.to_categorical(labels, 10).astype(np.float32)
    return x, y


def build_model() -> keras.Model:
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.records = []
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._t0
        logs = logs or {}
        self.records.append({
            "epoch": epoch + 1,
            "seconds": seconds,
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": float(logs.get("accuracy", float("nan"))),
        })


def main():
    keras.utils.set_random_seed(args.seed)

    t0 = time.perf_counter()
    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    load_seconds = time.perf_counter() - t0

    model = build_model()
    n_params = model.count_params()
    assert n_params == EXPECTED_PARAMS, f"model has {n_params} params, expected {EXPECTED_PARAMS}"
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit,
    )

    # Images actually seen per epoch (fit's validation_split takes the *last* fraction).
    n_fit = len(x_train) - int(len(x_train) * args.validation_split)
    steps_full = -(-n_fit // args.batch_size)
    if args.steps_per_epoch is not None and args.steps_per_epoch < steps_full:
        images_per_epoch = args.steps_per_epoch * args.batch_size
    else:
        images_per_epoch = n_fit

    timer = EpochTimer()
    model.fit(
        x_train, y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_split=args.validation_split,
        shuffle=True,
        callbacks=[timer],
        verbose=0,
    )
    epochs = []
    for r in timer.records:
        r["images_per_second"] = images_per_epoch / r["seconds"]
        epochs.append({k: r[k] for k in ("epoch", "seconds", "images_per_second", "loss", "accuracy")})

    timed = epochs[1:] if len(epochs) >= 3 else epochs
    sec_median = statistics.median(e["seconds"] for e in timed)
    ips_median = statistics.median(e["images_per_second"] for e in timed)

    # Evaluation: one warm-up call (tracing/compilation), then one timed call.
    model.evaluate(x_test, y_test, batch_size=args.eval_batch_size, verbose=0)
    t0 = time.perf_counter()
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=args.eval_batch_size, verbose=0)
    eval_seconds = time.perf_counter() - t0
    eval_ips = len(x_test) / eval_seconds

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    result = {
        "system": "keras",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "threads": args.threads,
        "inter_op_threads": inter_threads,
        "jit_compile": bool(getattr(model, "jit_compile", False)),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
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

    report(result, f"keras {keras.__version__} / tensorflow {tf.__version__}  "
                   f"threads intra={args.threads} inter={inter_threads}  "
                   f"jit_compile={result['jit_compile']}  batch={args.batch_size}  params={n_params:,}",
           args.json)


if __name__ == "__main__":
    sys.exit(main())
