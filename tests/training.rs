//! Training on real MNIST slices through the library, on both CPU backends.

mod common;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::data::{SplitKind, load_split};
use mnist_cnn::evaluate::evaluate;
use mnist_cnn::train::{TrainConfig, TrainOutcome, train};

fn train_slice(config: &TrainConfig) -> (TrainOutcome, tempfile::TempDir) {
    let data = load_split(&common::data_dir(), SplitKind::Train).unwrap();
    let out = tempfile::tempdir().unwrap();
    let outcome = train(
        config,
        &data,
        &common::data_dir(),
        out.path(),
        false,
        &mut |_| {},
    )
    .unwrap();
    (outcome, out)
}

fn test_accuracy(outcome: &TrainOutcome, backend: BackendKind) -> f64 {
    let test = load_split(&common::data_dir(), SplitKind::Test).unwrap();
    evaluate(
        &outcome.network,
        &test,
        SplitKind::Test,
        &outcome.run.class_names,
        500,
        &backend.device(),
    )
    .accuracy
}

#[test]
fn flex_learns_mnist_from_6000_images() {
    let config = TrainConfig {
        epochs: 2,
        limit: Some(6000),
        batch_size: 32,
        validation_split: 0.0,
        ..TrainConfig::default()
    };
    let (outcome, _out) = train_slice(&config);
    let accuracy = test_accuracy(&outcome, BackendKind::Flex);
    assert!(accuracy >= 0.94, "test accuracy {accuracy}");
    assert_eq!(outcome.run.history.len(), 2);
    assert!(outcome.run.history[1].loss < outcome.run.history[0].loss);
}

#[test]
fn ndarray_learns_mnist_from_6000_images() {
    let config = TrainConfig {
        backend: BackendKind::Ndarray,
        epochs: 2,
        limit: Some(6000),
        batch_size: 32,
        validation_split: 0.0,
        ..TrainConfig::default()
    };
    let (outcome, _out) = train_slice(&config);
    let accuracy = test_accuracy(&outcome, BackendKind::Ndarray);
    assert!(accuracy >= 0.94, "test accuracy {accuracy}");
}

#[test]
fn mlp_learns_too() {
    let config = TrainConfig {
        architecture: mnist_cnn::model::Architecture::Mlp,
        epochs: 2,
        limit: Some(6000),
        validation_split: 0.0,
        ..TrainConfig::default()
    };
    let (outcome, _out) = train_slice(&config);
    let accuracy = test_accuracy(&outcome, BackendKind::Flex);
    assert!(accuracy >= 0.88, "test accuracy {accuracy}");
}

#[test]
fn same_seed_gives_identical_history_and_another_seed_does_not() {
    let config = TrainConfig {
        epochs: 2,
        limit: Some(1200),
        steps_per_epoch: Some(4),
        batch_size: 64,
        ..TrainConfig::default()
    };
    let strip = |outcome: &TrainOutcome| -> Vec<(f64, f64, Option<f64>, Option<f64>)> {
        outcome
            .run
            .history
            .iter()
            .map(|e| (e.loss, e.accuracy, e.val_loss, e.val_accuracy))
            .collect()
    };
    let first = strip(&train_slice(&config).0);
    let second = strip(&train_slice(&config).0);
    assert_eq!(first, second);
    let other = strip(
        &train_slice(&TrainConfig {
            seed: 7,
            ..config.clone()
        })
        .0,
    );
    assert_ne!(first, other);
}
