#!/usr/bin/env python3
"""Keras models for `mnist-cnn import-model`'s tests, made by Keras itself.

Writes into tests/fixtures/keras/ (small files, committed):

  cnn.keras, cnn.h5, cnn.weights.h5   the tutorial's CNN, trained briefly on raw 0-255 pixels
                                      (as the tutorial does), in Keras 3's three formats
  cnn.json                            Keras's own model.evaluate [loss, accuracy] on the test
                                      set, its probabilities for the first 100 test images and
                                      its predicted class for all 10,000
  mlp.keras, mlp.weights.h5           the fully connected alternative, behind a
                                      Rescaling(1/255) layer (as keras.io scales pixels)
  mlp.json                            the same numbers for it
  other.keras                         a model of another architecture (refused by import-model)
  hostile/*.h5                        small damaged and lying HDF5 files, written with h5py
                                      (see hostile() below)

Run it with the Keras venv (benches/reference/requirements.txt):

    .venv-keras/bin/python benches/reference/keras_fixtures.py

Trained on 2 threads with a fixed seed; the Rust tests read the files, not this script.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["OMP_NUM_THREADS"] = "2"
os.environ["TF_NUM_INTRAOP_THREADS"] = "2"
os.environ["TF_NUM_INTEROP_THREADS"] = "2"
# Deterministic kernels, so that the fixtures are the same on every run of this script.
os.environ["TF_DETERMINISTIC_OPS"] = "1"

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402

from mnist_idx import load_raw  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROBABILITIES_SHOWN = 100


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "mnist")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "keras")
    p.add_argument("--steps", type=int, default=300, help="training steps of batch 128 per model")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def cnn() -> keras.Model:
    """The tutorial's model: it reads raw pixels 0-255."""
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
    ], name="cnn")


def mlp() -> keras.Model:
    """The fully connected alternative, scaling pixels to 0-1 itself."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="mlp")


def other() -> keras.Model:
    """Not an architecture of mnist-cnn: 8 filters of 5x5, no padding."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(8, 5, padding="valid", activation="relu"),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="other")


def train(model, x, y, steps, seed):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    n = steps * 128
    model.fit(x[:n], y[:n], batch_size=128, epochs=1, shuffle=True, verbose=0)


def reference_numbers(model, x_test, y_test):
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    probabilities = model.predict(x_test, batch_size=500, verbose=0)
    return {
        "keras": keras.__version__,
        "evaluate": [float(loss), float(accuracy)],
        "probabilities": probabilities[:PROBABILITIES_SHOWN].astype(float).tolist(),
        "predicted": probabilities.argmax(axis=1).tolist(),
    }


def write_json(path: Path, value):
    path.write_text(json.dumps(value) + "\n")
    print(f"wrote {path}")


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images, labels = load_raw(args.data_dir, "train")
    test_images, test_labels = load_raw(args.data_dir, "t10k")
    # Raw pixels, as the tutorial feeds them.
    x = images.astype(np.float32)[..., np.newaxis]
    y = keras.utils.to_categorical(labels, 10).astype(np.float32)
    x_test = test_images.astype(np.float32)[..., np.newaxis]
    y_test = keras.utils.to_categorical(test_labels, 10).astype(np.float32)

    for name, build, formats in [
        ("cnn", cnn, [".keras", ".h5", ".weights.h5"]),
        ("mlp", mlp, [".keras", ".weights.h5"]),
    ]:
        # Fresh layer names (conv2d, dense, ...) for every model, as in a new notebook.
        keras.backend.clear_session()
        keras.utils.set_random_seed(args.seed)
        model = build()
        train(model, x, y, args.steps, args.seed)
        # A notebook's model.save() after fit() keeps Adam's state too (three times the
        # weights): cnn.keras keeps it, so that the reader is tested on it; the other files
        # hold the weights alone, to keep the fixtures small.
        weights = model.get_weights()
        saved_with_optimizer = model
        keras.backend.clear_session()
        bare = build()
        bare.set_weights(weights)
        for suffix in formats:
            saved = saved_with_optimizer if (name, suffix) == ("cnn", ".keras") else bare
            path = args.out / f"{name}{suffix}"
            if suffix == ".weights.h5":
                saved.save_weights(path)
            else:
                saved.save(path)
            print(f"wrote {path} ({path.stat().st_size} bytes)")
        numbers = reference_numbers(bare, x_test, y_test)
        print(f"{name}: evaluate {numbers['evaluate']}")
        write_json(args.out / f"{name}.json", numbers)

    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    model = other()
    path = args.out / "other.keras"
    model.save(path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")

    hostile(args.out / "hostile")


def hostile(out: Path):
    """Files that import-model must refuse cleanly, without reading what they do not hold."""
    out.mkdir(parents=True, exist_ok=True)
    conv = np.zeros((3, 3, 1, 16), np.float32)
    last = np.zeros((128, 10), np.float32)

    def weights_file(name, fill):
        with h5py.File(out / name, "w") as f:
            fill(f)
        print(f"wrote {out / name}")

    def keras3(f, layers):
        for key, values in layers.items():
            for i, value in enumerate(values):
                f.create_dataset(f"layers/{key}/vars/{i}", data=value)

    # The first layer's bias is missing.
    weights_file("missing.weights.h5", lambda f: keras3(f, {"conv2d": [conv], "dense_2": [last]}))
    # The first layer's bias has 17 values, not 16.
    weights_file("shape.weights.h5", lambda f: keras3(
        f, {"conv2d": [conv, np.zeros(17, np.float32)], "dense_2": [last]}))
    # The first kernel is float64.
    weights_file("float64.weights.h5", lambda f: keras3(
        f, {"conv2d": [conv.astype(np.float64), np.zeros(16, np.float32)], "dense_2": [last]}))

    # A legacy model of 1024x1024 images whose first dense kernel declares 2^21 x 128 values
    # (1 GiB) in a file of a few KiB: chunked, never written.
    with h5py.File(ROOT / "tests" / "fixtures" / "keras" / "cnn.h5", "r") as source:
        config = json.loads(source.attrs["model_config"])
        config["config"]["layers"][0]["config"]["batch_shape"] = [None, 1024, 1024, 1]
        with h5py.File(out / "lying.h5", "w") as f:
            f.attrs["model_config"] = json.dumps(config)
            f.attrs["keras_version"] = source.attrs["keras_version"]
            weights = f.create_group("model_weights")
            for name in source["model_weights"]:
                group = source["model_weights"][name]
                target = weights.create_group(name)
                target.attrs["weight_names"] = group.attrs["weight_names"]
                for weight in group.attrs["weight_names"]:
                    weight = weight.decode() if isinstance(weight, bytes) else weight
                    if name == "dense" and weight.endswith("kernel"):
                        target.create_dataset(weight, shape=(32 * 256 * 256, 128),
                                              chunks=(1024, 128), dtype=np.float32)
                    else:
                        target.create_dataset(weight, data=group[weight][()])
    print(f"wrote {out / 'lying.h5'}")


if __name__ == "__main__":
    sys.exit(main())
