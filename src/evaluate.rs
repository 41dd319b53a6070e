//! Metrics of a trained network on a split: loss, accuracy, per-class precision / recall / F1,
//! the confusion matrix and the most confident mistakes.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Split, SplitKind};
use crate::error::Result;
use crate::fsutil::write_json_atomically;
use crate::model::argmax;
use crate::model::{Network, log_probabilities};
use crate::plot::{GridImage, HeatmapOptions, heatmap, image_grid};

pub const METRICS_FILE: &str = "metrics.json";
pub const CONFUSION_PLOT: &str = "confusion_matrix.png";
pub const MISCLASSIFIED_PLOT: &str = "misclassified.png";
/// How many mistakes `misclassified.png` shows.
pub const MISTAKES_SHOWN: usize = 25;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: usize,
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mistake {
    pub index: usize,
    pub label: usize,
    pub predicted: usize,
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub split: SplitKind,
    pub class_names: Vec<String>,
    pub images: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub per_class: Vec<ClassMetrics>,
    pub macro_f1: f64,
    /// `confusion[true][predicted]`
    pub confusion: Vec<Vec<usize>>,
    /// Wrong predictions, most confident first.
    pub mistakes: Vec<Mistake>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Evaluates `network` on every image of `split`; `class_names` names its outputs.
pub fn evaluate(
    network: &Network,
    split: &Split,
    kind: SplitKind,
    class_names: &[String],
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    let started = std::time::Instant::now();
    let indices: Vec<usize> = (0..split.len()).collect();
    let scores = log_probabilities(network, split, &indices, batch_size, device);
    let seconds = started.elapsed().as_secs_f64();
    let predictions: Vec<(usize, f32)> = scores
        .rows()
        .map(|row| {
            let best = argmax(row);
            (best, row[best])
        })
        .collect();
    let mut evaluation = from_predictions(kind, class_names, &split.labels, &predictions, |i| {
        -f64::from(scores.row(i)[split.labels[i] as usize])
    });
    evaluation.seconds = seconds;
    evaluation.images_per_second = split.len() as f64 / seconds.max(f64::EPSILON);
    evaluation
}

/// Builds the metrics from labels and `(predicted class, its log-probability)` per image;
/// `loss_of(i)` is image i's cross-entropy.
pub fn from_predictions(
    kind: SplitKind,
    class_names: &[String],
    labels: &[u8],
    predictions: &[(usize, f32)],
    loss_of: impl Fn(usize) -> f64,
) -> Evaluation {
    let classes = class_names.len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut mistakes = Vec::new();
    let mut loss = 0.0;
    for (index, (&label, &(predicted, log_prob))) in labels.iter().zip(predictions).enumerate() {
        let label = label as usize;
        confusion[label][predicted] += 1;
        loss += loss_of(index);
        if predicted != label {
            mistakes.push(Mistake {
                index,
                label,
                predicted,
                confidence: f64::from(log_prob).exp(),
            });
        }
    }
    mistakes.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let per_class: Vec<ClassMetrics> = (0..classes)
        .map(|class| {
            let true_positives = confusion[class][class] as f64;
            let predicted: usize = confusion.iter().map(|row| row[class]).sum();
            let support: usize = confusion[class].iter().sum();
            let precision = ratio(true_positives, predicted as f64);
            let recall = ratio(true_positives, support as f64);
            ClassMetrics {
                class,
                name: class_names[class].clone(),
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                support,
            }
        })
        .collect();
    let images = labels.len();
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    Evaluation {
        split: kind,
        class_names: class_names.to_vec(),
        images,
        loss: loss / images.max(1) as f64,
        accuracy: correct as f64 / images.max(1) as f64,
        macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / classes.max(1) as f64,
        per_class,
        confusion,
        mistakes,
        seconds: 0.0,
        images_per_second: 0.0,
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

impl Evaluation {
    /// The per-class table, as scikit-learn's `classification_report` prints it.
    pub fn report_table(&self) -> String {
        let width = self
            .class_names
            .iter()
            .map(|name| name.chars().count())
            .max()
            .unwrap_or(0)
            .max("macro avg".len());
        let mut out = format!(
            "{:>width$} {:>9} {:>9} {:>9} {:>9}\n",
            "class", "precision", "recall", "f1-score", "support"
        );
        for c in &self.per_class {
            out += &format!(
                "{:>width$} {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
                c.name, c.precision, c.recall, c.f1, c.support
            );
        }
        out += &format!(
            "{:>width$} {:>9} {:>9} {:>9.4} {:>9}\n",
            "macro avg", "", "", self.macro_f1, self.images
        );
        out
    }

    /// The confusion matrix as text, true classes down, predicted across.
    pub fn confusion_table(&self) -> String {
        let mut out = format!("{:>10}", "true\\pred");
        for class in 0..self.class_names.len() {
            out += &format!("{class:>6}");
        }
        out.push('\n');
        for (label, row) in self.confusion.iter().enumerate() {
            out += &format!("{label:>10}");
            for count in row {
                out += &format!("{count:>6}");
            }
            out.push('\n');
        }
        out
    }

    /// `metrics.json`, `confusion_matrix.png` and, when there are mistakes, `misclassified.png`
    /// in `dir` (an old one is removed when there are none). Returns the files written.
    pub fn write_reports(&self, dir: &Path, split: &Split) -> Result<Vec<PathBuf>> {
        write_json_atomically(&dir.join(METRICS_FILE), self)?;
        let counts: Vec<f64> = self.confusion.iter().flatten().map(|&c| c as f64).collect();
        let max = counts.iter().copied().fold(1.0, f64::max);
        let classes = self.class_names.len();
        let class_names = self.class_names.clone();
        let mut options = HeatmapOptions::new(
            format!(
                "Confusion matrix, {} split (accuracy {:.4})",
                self.split, self.accuracy
            ),
            (0.0, max),
        );
        options.annotate = true;
        options.x_labels = Some(class_names.clone());
        options.y_labels = Some(class_names);
        options.x_desc = Some("predicted".into());
        options.y_desc = Some("true".into());
        heatmap(
            &dir.join(CONFUSION_PLOT),
            &counts,
            classes,
            classes,
            &options,
        )?;
        let shown: Vec<GridImage> = self
            .mistakes
            .iter()
            .take(MISTAKES_SHOWN)
            .map(|m| GridImage {
                pixels: split.image(m.index).to_vec(),
                rows: split.rows,
                cols: split.cols,
                caption: format!(
                    "#{}: true {}, pred {} ({:.2})",
                    m.index, self.class_names[m.label], self.class_names[m.predicted], m.confidence
                ),
            })
            .collect();
        let mut written = vec![dir.join(METRICS_FILE), dir.join(CONFUSION_PLOT)];
        let mistakes_path = dir.join(MISCLASSIFIED_PLOT);
        if shown.is_empty() {
            let _ = std::fs::remove_file(&mistakes_path);
            return Ok(written);
        }
        image_grid(
            &mistakes_path,
            &format!("Most confident mistakes, {} split", self.split),
            &shown,
            5,
        )?;
        written.push(mistakes_path);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Vec<String> {
        (0..10).map(|d| d.to_string()).collect()
    }

    #[test]
    fn metrics_from_known_predictions() {
        // Labels 0,0,1,1; predictions 0,1,1,1: class 0 recall 0.5 precision 1; class 1
        // precision 2/3 recall 1.
        let labels = [0u8, 0, 1, 1];
        let predictions = [(0, -0.1f32), (1, -0.2), (1, -0.3), (1, -0.05)];
        let evaluation = from_predictions(SplitKind::Test, &digits(), &labels, &predictions, |i| {
            i as f64
        });
        assert_eq!(evaluation.accuracy, 0.75);
        assert_eq!(evaluation.loss, 1.5);
        assert_eq!(evaluation.confusion[0][1], 1);
        assert_eq!(evaluation.confusion[1][1], 2);
        let class0 = &evaluation.per_class[0];
        assert_eq!(
            (class0.precision, class0.recall, class0.support),
            (1.0, 0.5, 2)
        );
        let class1 = &evaluation.per_class[1];
        assert!((class1.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((class1.f1 - 0.8).abs() < 1e-12);
        assert_eq!(evaluation.per_class[5].support, 0);
        assert_eq!(evaluation.per_class[5].f1, 0.0);
        assert_eq!(evaluation.mistakes.len(), 1);
        assert_eq!(evaluation.mistakes[0].index, 1);
        assert!((evaluation.mistakes[0].confidence - (-0.2f64).exp()).abs() < 1e-6);
    }

    #[test]
    fn mistakes_are_sorted_most_confident_first() {
        let labels = [3u8, 3, 3];
        let predictions = [(5, -2.0f32), (5, -0.1), (3, -0.1)];
        let evaluation =
            from_predictions(SplitKind::Test, &digits(), &labels, &predictions, |_| 0.0);
        let order: Vec<usize> = evaluation.mistakes.iter().map(|m| m.index).collect();
        assert_eq!(order, vec![1, 0]);
        assert!(evaluation.report_table().contains("macro"));
        assert!(evaluation.confusion_table().lines().count() == 11);
    }
}
