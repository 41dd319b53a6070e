//! The settings that determine a training run ([`TrainConfig`], recorded in `run.json`), with
//! the choices they name: where the validation images come from ([`ValidationFrom`], chosen by
//! `train::validation`) and the learning-rate schedule ([`LrSchedule`], computed by
//! `train::schedule`). They live in `run`, below `train`, so that the manifest records them
//! without reaching up into the training loop.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::model::Architecture;

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub architecture: Architecture,
    pub backend: BackendKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub validation_split: f64,
    pub steps_per_epoch: Option<usize>,
    pub limit: Option<usize>,
    /// Where the validation images come from; runs written before it have none (auto).
    #[serde(default)]
    pub validation_from: ValidationFrom,
    /// Random shifts and small rotations of the training images, seeded.
    #[serde(default)]
    pub augment: bool,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Stop when the validation loss has not improved for this many epochs, and end with the
    /// weights of the best epoch.
    #[serde(default)]
    pub early_stopping: Option<usize>,
    /// The training loss is logged (run.json, TensorBoard) as its mean over every this many
    /// steps; it changes nothing in the training itself.
    #[serde(default = "default_log_every_steps")]
    pub log_every_steps: usize,
    /// The run whose weights training started from, instead of fresh ones (with a fresh
    /// optimizer). Not compared on resume: a resumed run starts from its own checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

/// Steps per logged training loss: 9 points per epoch of MNIST at batch size 128.
pub const LOG_EVERY_STEPS: usize = 50;

fn default_log_every_steps() -> usize {
    LOG_EVERY_STEPS
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            architecture: Architecture::Cnn,
            backend: BackendKind::Flex,
            epochs: 10,
            batch_size: 128,
            learning_rate: 1e-3,
            seed: 42,
            validation_split: 0.1,
            steps_per_epoch: None,
            limit: None,
            validation_from: ValidationFrom::Auto,
            augment: false,
            lr_schedule: LrSchedule::Constant,
            early_stopping: None,
            log_every_steps: LOG_EVERY_STEPS,
            init_from: None,
        }
    }
}

impl TrainConfig {
    /// Refuses values no run can use. The command line checks the same ranges when it parses.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.epochs == 0 {
            Some("epochs must be at least 1".to_string())
        } else if self.batch_size == 0 {
            Some("the batch size must be at least 1".to_string())
        } else if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            Some(format!(
                "the learning rate must be a positive number, got {}",
                self.learning_rate
            ))
        } else if !(0.0..1.0).contains(&self.validation_split) {
            Some(format!(
                "the validation split must be in [0, 1), got {}",
                self.validation_split
            ))
        } else if self.steps_per_epoch == Some(0) {
            Some("steps per epoch must be at least 1".to_string())
        } else if self.limit == Some(0) {
            Some("the image limit must be at least 1".to_string())
        } else if self.log_every_steps == 0 {
            Some("the training loss must be logged every 1 step or more".to_string())
        } else if self.early_stopping == Some(0) {
            Some("the early-stopping patience must be at least 1 epoch".to_string())
        } else if self.early_stopping.is_some() && self.validation_split == 0.0 {
            Some(
                "early stopping watches the validation loss, so it needs a validation split above 0"
                    .to_string(),
            )
        } else {
            None
        };
        problem.map_or(Ok(()), |message| Err(Error::InvalidArgument(message)))
    }

    /// The settings that differ from `other`'s, apart from those a resumed run may change
    /// (the number of epochs and the backend); empty when a run can continue exactly.
    pub fn differences_from(&self, other: &TrainConfig) -> Vec<&'static str> {
        let mut differences = Vec::new();
        let mut differ = |name, same: bool| {
            if !same {
                differences.push(name);
            }
        };
        differ("model", self.architecture == other.architecture);
        differ("batch size", self.batch_size == other.batch_size);
        differ("learning rate", self.learning_rate == other.learning_rate);
        differ("seed", self.seed == other.seed);
        differ(
            "validation split",
            self.validation_split == other.validation_split,
        );
        differ(
            "steps per epoch",
            self.steps_per_epoch == other.steps_per_epoch,
        );
        differ("limit", self.limit == other.limit);
        differ(
            "validation source",
            self.validation_from == other.validation_from,
        );
        differ("augmentation", self.augment == other.augment);
        differ(
            "learning-rate schedule",
            self.lr_schedule == other.lr_schedule,
        );
        // A schedule spreads over all the epochs, so their number is part of it; so it is of
        // a run that ends with its best epoch's weights.
        differ(
            "epochs (part of the learning-rate schedule)",
            self.lr_schedule == LrSchedule::Constant || self.epochs == other.epochs,
        );
        differ(
            "epochs (a run with early stopping ends with its best weights)",
            self.early_stopping.is_none() || self.epochs == other.epochs,
        );
        differ(
            "early stopping",
            self.early_stopping == other.early_stopping,
        );
        differences
    }
}

/// Where the validation images come from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ValidationFrom {
    /// The last fraction (Keras) when it holds the same classes as the rest, as on data in
    /// random order; a seeded stratified pick when it does not, as on data sorted by class
    #[default]
    Auto,
    /// The last fraction of the training data, as Keras's validation_split
    Last,
    /// A seeded pick of the fraction from every class (stratified)
    Random,
}

/// How the learning rate changes over a run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate throughout (the tutorial's)
    #[default]
    Constant,
    /// Half a cosine from the rate down to 0 over all the run's steps
    Cosine,
    /// The rate, a tenth of it from half of the epochs on, a hundredth from three quarters on
    Step,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_differences_name_each_setting() {
        let base = TrainConfig::default();
        let other = TrainConfig {
            batch_size: 64,
            seed: 7,
            epochs: 3,
            ..base.clone()
        };
        assert_eq!(base.differences_from(&other), vec!["batch size", "seed"]);
        assert!(base.differences_from(&base.clone()).is_empty());
    }

    /// Every float of the manifest reads back bit for bit (the resume check compares them
    /// exactly), whatever its value.
    #[test]
    fn floats_survive_json_exactly() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let config = TrainConfig {
                learning_rate: f64::from_bits(
                    rng.random_range(1e-12f64.to_bits()..1.0f64.to_bits()),
                ),
                validation_split: rng.random_range(0.0..1.0),
                ..TrainConfig::default()
            };
            let json = serde_json::to_string(&config).unwrap();
            let back: TrainConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(
                (
                    back.learning_rate.to_bits(),
                    back.validation_split.to_bits()
                ),
                (
                    config.learning_rate.to_bits(),
                    config.validation_split.to_bits()
                ),
                "{json}"
            );
            assert!(back.differences_from(&config).is_empty(), "{json}");
        }
    }
}
