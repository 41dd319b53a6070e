//! The learning rate of each step: a function of the epoch and step alone, so a resumed run
//! uses exactly the rates an uninterrupted one would.

use serde::{Deserialize, Serialize};

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

/// The rate of step `step` (0-based) of epoch `epoch` (0-based) in a run of `epochs` epochs of
/// `steps` steps each, starting from `base`.
pub fn learning_rate(
    schedule: LrSchedule,
    base: f64,
    epoch: usize,
    step: usize,
    epochs: usize,
    steps: usize,
) -> f64 {
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Cosine => {
            let total = (epochs * steps).max(1) as f64;
            let done = (epoch * steps + step) as f64;
            base * 0.5 * (1.0 + (std::f64::consts::PI * done / total).cos())
        }
        LrSchedule::Step => {
            let drops = usize::from(epoch * 2 >= epochs) + usize::from(epoch * 4 >= epochs * 3);
            base * 0.1f64.powi(drops as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let rate = |s, epoch, step| learning_rate(s, 1e-3, epoch, step, 10, 100);
        assert_eq!(rate(LrSchedule::Constant, 9, 99), 1e-3);
        assert_eq!(rate(LrSchedule::Cosine, 0, 0), 1e-3);
        assert!(
            (rate(LrSchedule::Cosine, 5, 0) - 5e-4).abs() < 1e-12,
            "half way"
        );
        assert!(rate(LrSchedule::Cosine, 9, 99) < 1e-6, "ends near 0");
        assert!(rate(LrSchedule::Cosine, 3, 10) > rate(LrSchedule::Cosine, 3, 11));
        assert_eq!(rate(LrSchedule::Step, 4, 99), 1e-3);
        assert!((rate(LrSchedule::Step, 5, 0) - 1e-4).abs() < 1e-15);
        assert!((rate(LrSchedule::Step, 7, 0) - 1e-4).abs() < 1e-15);
        assert!((rate(LrSchedule::Step, 8, 0) - 1e-5).abs() < 1e-16);
    }
}
