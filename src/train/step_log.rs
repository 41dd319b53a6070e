//! The training loss every few steps, for the run's log: the mean loss per image of the steps
//! since the previous entry, at every `every`-th step of an epoch and at its last step.

use crate::run::StepLoss;

pub(crate) struct StepLog {
    every: usize,
    /// The run's steps before this epoch.
    before: usize,
    steps: usize,
    images: usize,
    loss_sum: f64,
    logged: Vec<StepLoss>,
}

impl StepLog {
    pub(crate) fn new(every: usize, before: usize) -> Self {
        Self {
            every: every.max(1),
            before,
            steps: 0,
            images: 0,
            loss_sum: 0.0,
            logged: Vec::new(),
        }
    }

    /// One step of `images` images whose mean loss was `mean_loss`.
    pub(crate) fn add(&mut self, images: usize, mean_loss: f64) {
        self.steps += 1;
        self.images += images;
        self.loss_sum += mean_loss * images as f64;
        if self.steps.is_multiple_of(self.every) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.images > 0 {
            self.logged.push(StepLoss {
                step: self.before + self.steps,
                loss: self.loss_sum / self.images as f64,
            });
        }
        self.images = 0;
        self.loss_sum = 0.0;
    }

    /// The entries of the epoch, the steps after the last full interval included.
    pub(crate) fn finish(mut self) -> Vec<StepLoss> {
        self.flush();
        self.logged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_counted_once_and_the_last_one_closes_the_epoch() {
        let mut log = StepLog::new(2, 10);
        for (images, loss) in [(4, 1.0), (4, 3.0), (4, 5.0), (2, 8.0), (1, 9.0)] {
            log.add(images, loss);
        }
        let logged = log.finish();
        let pairs: Vec<(usize, f64)> = logged.iter().map(|s| (s.step, s.loss)).collect();
        assert_eq!(pairs, vec![(12, 2.0), (14, 6.0), (15, 9.0)]);
        let mut exact = StepLog::new(3, 0);
        (0..3).for_each(|_| exact.add(1, 0.5));
        assert_eq!(
            exact.finish().len(),
            1,
            "no empty entry after a full interval"
        );
    }
}
