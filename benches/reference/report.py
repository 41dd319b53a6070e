"""The end of a reference run, the same for every peer: the per-epoch table and summary on stdout, and
the result as JSON for benches/compare.py."""

import json
from pathlib import Path


def report(result: dict, header: str, json_path: Path | None) -> None:
    """Prints `header`, then `result`'s epochs, medians, evaluation and peak RSS; writes `result` to
    `json_path` when given."""
    print(header)
    print(f"{'epoch':>5} {'seconds':>9} {'img/s':>9} {'loss':>8} {'acc':>7}")
    for e in result["epochs"]:
        print(f"{e['epoch']:>5} {e['seconds']:>9.2f} {e['images_per_second']:>9.0f} "
              f"{e['loss']:>8.4f} {e['accuracy']:>7.4f}")
    which = "excl. epoch 1" if result["median_excludes_first_epoch"] else "all epochs"
    print(f"median ({which}): {result['train_seconds_per_epoch_median']:.2f} s/epoch, "
          f"{result['train_images_per_second_median']:.0f} img/s")
    print(f"eval: {result['eval_images_per_second']:.0f} img/s ({result['eval_seconds']:.3f} s, "
          f"batch {result['eval_batch_size']})  test loss {result['test_loss']:.4f}  "
          f"test acc {result['test_accuracy']:.4f}")
    print(f"peak RSS: {result['peak_rss_mb']:.0f} MB")

    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
