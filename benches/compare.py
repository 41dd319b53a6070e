#!/usr/bin/env python3
"""Side-by-side benchmark: mnist-cnn (burn) against Keras/TensorFlow and PyTorch on the same CPU.

Trains the identical model with the identical batch size and thread count in each system on the
full 60,000 MNIST training images, one system after the other, then evaluates on the 10,000 test
images, and prints the median epoch time, training and evaluation images/s, peak RSS and the
ratios of mnist-cnn against each peer.

Evaluation speed is measured the same way everywhere: the trained model classifies the 10,000
test images after a warm-up (Keras: one full `model.evaluate`; PyTorch: one full pass in
`inference_mode`; mnist-cnn: `bench --model-dir`, one batch). The speed of mnist-cnn's `evaluate`
command, which includes its first batch, is printed as well.

The peers run from their own virtual environments at the repository root:

    python3 -m venv .venv-keras && .venv-keras/bin/pip install -r benches/reference/requirements.txt
    python3 -m venv .venv-torch && .venv-torch/bin/pip install -r benches/reference/requirements-torch.txt
    cargo build --release
    python3 benches/compare.py --epochs 3 --batch-size 128 --threads 2 --backend flex

(For PyTorch's smaller CPU-only wheel add `--index-url https://download.pytorch.org/whl/cpu
--extra-index-url https://pypi.org/simple` to the second pip install where that index is
reachable; see requirements-torch.txt.) `--skip-keras` / `--skip-torch` leave a peer out; a peer
that is not skipped and has no venv stops the run before anything is measured.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(command):
    print("$", " ".join(str(c) for c in command), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def median_after_warmup(values):
    return statistics.median(values[1:] if len(values) >= 3 else values)


def summary(system, epochs, eval_images_per_second, test_accuracy, peak_rss_mb):
    """One system's row; `epochs` holds dicts with `seconds` and `images_per_second`."""
    seconds = [e["seconds"] for e in epochs]
    return {
        "system": system,
        "epoch_seconds": seconds,
        "epoch_images_per_second": [e["images_per_second"] for e in epochs],
        "total_train_seconds": sum(seconds),
        "median_epoch_seconds": median_after_warmup(seconds),
        "train_images_per_second": median_after_warmup([e["images_per_second"] for e in epochs]),
        "eval_images_per_second": eval_images_per_second,
        "test_accuracy": test_accuracy,
        "peak_rss_mb": peak_rss_mb,
    }


def rust(args, out):
    binary = ROOT / "target/release/mnist-cnn"
    common = [binary, "--threads", str(args.threads), "--data-dir", ROOT / "data/mnist"]
    if args.keep_subnormals:
        common.append("--keep-subnormals")
    trained = json.loads(run(common + [
        "--json", "train", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--validation-split", "0", "--backend", args.backend, "--out", out, "--overwrite",
    ]))
    evaluated = json.loads(run(common + [
        "--json", "evaluate", "--model-dir", out, "--batch-size", str(args.eval_batch_size),
        "--backend", args.backend,
    ]))
    warm = json.loads(run(common + [
        "--json", "bench", "--model-dir", out, "--backends", args.backend,
        "--batch-sizes", str(args.batch_size), "--train-images", str(args.batch_size),
        "--eval-batch-sizes", str(args.eval_batch_size),
    ]))
    row = summary(
        f"mnist-cnn (burn {trained['run']['burn_version']}, {args.backend})",
        trained["history"],
        warm["evaluation"][0]["images_per_second"],
        evaluated["accuracy"],
        trained["run"]["peak_rss_mb"],
    )
    row["evaluate_command_images_per_second"] = evaluated["images_per_second"]
    return row


# Peers by short name (the key of `ratios` in the JSON); script and requirements in benches/reference/.
PEERS = {
    "keras": {"name": "Keras", "venv": ".venv-keras", "script": "keras_mnist.py",
              "requirements": "requirements.txt", "skip": "--skip-keras"},
    "pytorch": {"name": "PyTorch", "venv": ".venv-torch", "script": "torch_mnist.py",
                "requirements": "requirements-torch.txt", "skip": "--skip-torch"},
}


def peer_python(peer):
    """The peer's venv interpreter; exits with the install command if the venv is missing."""
    p = PEERS[peer]
    python = ROOT / p["venv"] / "bin/python"
    if not python.exists():
        sys.exit(f"compare.py: {python} not found; install the {p['name']} reference with\n"
                 f"    python3 -m venv {p['venv']} && {p['venv']}/bin/pip install -r "
                 f"benches/reference/{p['requirements']}\n"
                 f"(run from {ROOT}) or leave it out with {p['skip']}")
    return python


def run_peer(peer, args, out):
    """Runs the peer's reference script and returns its parsed JSON."""
    script = ROOT / "benches/reference" / PEERS[peer]["script"]
    run([peer_python(peer), script, "--epochs", str(args.epochs),
         "--batch-size", str(args.batch_size), "--threads", str(args.threads),
         "--eval-batch-size", str(args.eval_batch_size), "--json", out])
    return json.loads(Path(out).read_text())


def peer_row(peer, system, result):
    row = summary(system, result["epochs"], result["eval_images_per_second"],
                  result["test_accuracy"], result["peak_rss_mb"])
    row["peer"] = peer
    return row


def keras(args, out):
    result = run_peer("keras", args, out)
    return peer_row("keras", f"Keras {result['keras']} / TensorFlow {result['tensorflow']}", result)


def torch(args, out):
    result = run_peer("pytorch", args, out)
    return peer_row("pytorch", f"PyTorch {result['torch']}", result)


def ratios_against(ours, theirs):
    """mnist-cnn divided by a peer: times (lower is better), speed (higher is better), memory."""
    return {
        "epoch_time_ratio": ours["median_epoch_seconds"] / theirs["median_epoch_seconds"],
        "total_train_time_ratio": ours["total_train_seconds"] / theirs["total_train_seconds"],
        "eval_speed_ratio": ours["eval_images_per_second"] / theirs["eval_images_per_second"],
        "peak_rss_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
    }


def print_epochs(rows):
    """Seconds per epoch, side by side, and how much the last epoch drifted from the second."""
    print(f"\n{'epoch':>5} " + " ".join(f"{row['system'][:30]:>31}" for row in rows))
    for epoch in range(len(rows[0]["epoch_seconds"])):
        cells = []
        for row in rows:
            seconds = row["epoch_seconds"]
            cells.append(f"{seconds[epoch]:>31.2f}" if epoch < len(seconds) else f"{'':>31}")
        print(f"{epoch + 1:>5} " + " ".join(cells))
    print(f"{'total':>5} " + " ".join(f"{row['total_train_seconds']:>31.2f}" for row in rows))
    for row in rows:
        seconds = row["epoch_seconds"]
        if len(seconds) >= 3:
            row["last_vs_second_epoch"] = seconds[-1] / seconds[1]
            print(f"{row['system']}: last epoch / epoch 2 = {row['last_vs_second_epoch']:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="flex", choices=["flex", "ndarray"])
    parser.add_argument("--skip-keras", action="store_true", help="leave Keras/TensorFlow out")
    parser.add_argument("--skip-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--keep-subnormals", action="store_true",
                        help="run mnist-cnn without flush-to-zero, to see what it costs")
    parser.add_argument("--json", type=Path, default=ROOT / "target/bench/compare.json")
    args = parser.parse_args()
    work = ROOT / "target/bench"
    work.mkdir(parents=True, exist_ok=True)

    # Fail before measuring anything if a peer that is not skipped has no venv.
    peers = [peer for peer, skip in (("keras", args.skip_keras), ("pytorch", args.skip_torch))
             if not skip]
    for peer in peers:
        peer_python(peer)

    ours = rust(args, work / f"rust-{args.backend}")
    rows = [ours]
    if "keras" in peers:
        rows.append(keras(args, work / "keras.json"))
    if "pytorch" in peers:
        rows.append(torch(args, work / "torch.json"))

    print(f"\n{args.epochs} epochs, batch {args.batch_size}, {args.threads} threads, "
          f"60,000 training images per epoch")
    print(f"{'system':<42} {'s/epoch':>8} {'train img/s':>12} {'eval img/s':>11} "
          f"{'peak RSS MB':>12} {'test acc':>9}")
    for row in rows:
        print(f"{row['system']:<42} {row['median_epoch_seconds']:>8.2f} "
              f"{row['train_images_per_second']:>12.0f} {row['eval_images_per_second']:>11.0f} "
              f"{row['peak_rss_mb']:>12.0f} {row['test_accuracy']:>9.4f}")
    print(f"(mnist-cnn's evaluate command, first batch included: "
          f"{ours['evaluate_command_images_per_second']:.0f} img/s)")
    print_epochs(rows)
    result = {"config": vars(args) | {"json": str(args.json)}, "systems": rows}
    if len(rows) > 1:
        print()
        result["ratios"] = {}
        for theirs in rows[1:]:
            ratios = ratios_against(ours, theirs)
            result["ratios"][theirs["peer"]] = ratios
            print(f"mnist-cnn / {PEERS[theirs['peer']]['name']}: total training time "
                  f"x{ratios['total_train_time_ratio']:.2f}, "
                  f"epoch time x{ratios['epoch_time_ratio']:.2f} "
                  f"(lower is better), eval speed x{ratios['eval_speed_ratio']:.2f} "
                  f"(higher is better), peak RSS x{ratios['peak_rss_ratio']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
