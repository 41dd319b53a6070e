//! The library without the CLI: load MNIST, train the CNN for a few hundred steps, evaluate it
//! on the test set and classify one test image.
//!
//! cargo run --release --example quickstart

use std::path::Path;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::data::{SplitKind, load_split};
use mnist_cnn::evaluate::evaluate;
use mnist_cnn::predict::top_classes;
use mnist_cnn::train::{TrainConfig, train};

fn main() -> anyhow::Result<()> {
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train_split = load_split(&data_dir, SplitKind::Train)?;
    let test_split = load_split(&data_dir, SplitKind::Test)?;

    // 300 steps of 64 images: a fraction of one epoch, enough for about 95% test accuracy.
    let config = TrainConfig {
        epochs: 1,
        batch_size: 64,
        steps_per_epoch: Some(300),
        validation_split: 0.0,
        ..TrainConfig::default()
    };
    let out = tempfile::tempdir()?;
    let outcome = train(
        &config,
        &train_split,
        &data_dir,
        out.path(),
        false,
        &mut |_| {},
    )?;
    let stats = &outcome.run.history[0];
    println!(
        "trained {} steps: loss {:.4}, accuracy {:.4}, {:.0} images/s",
        300, stats.loss, stats.accuracy, stats.images_per_second
    );

    let device = BackendKind::Flex.device();
    let class_names = &outcome.run.class_names;
    let metrics = evaluate(
        &outcome.network,
        &test_split,
        SplitKind::Test,
        class_names,
        500,
        &device,
    );
    println!(
        "test loss {:.4}, test accuracy {:.4}",
        metrics.loss, metrics.accuracy
    );

    let index = 0;
    let top = top_classes(
        &outcome.network,
        class_names,
        test_split.image(index),
        outcome.run.shape,
        3,
        &device,
    );
    println!(
        "test image {index} is a {}; the network says {} with probability {:.3}",
        test_split.labels[index], top[0].name, top[0].probability
    );
    anyhow::ensure!(
        metrics.accuracy > 0.9,
        "accuracy {:.4} is below 0.9",
        metrics.accuracy
    );
    Ok(())
}
