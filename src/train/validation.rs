//! Which training images a run learns from and which it validates on.
//!
//! Keras's `validation_split` takes the last fraction of the data before shuffling; that is
//! only a fair validation set when the data is in random order, as MNIST's files are. On data
//! stored class by class it is one or two classes alone, which the model then never learns.
//! [`select`] keeps Keras's choice where it is fair and otherwise picks a seeded stratified
//! sample, and says so; the same goes for a limit on the number of images.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

pub use crate::run::ValidationFrom;

/// What a warning is about, so a front end can add how to change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// The validation images and the training images hold different classes.
    ValidationClasses,
    /// The first images up to the limit miss some classes.
    LimitClasses,
    /// The last fraction was unfair, so a stratified pick was made instead.
    ValidationResampled,
}

/// Something about the data a user should know before trusting the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
}

/// The images of one run, as indices into the training split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Training images, in the order of the file.
    pub train: Vec<usize>,
    /// Validation images, in the order of the file.
    pub validation: Vec<usize>,
    /// How the validation images were actually chosen (never `Auto`).
    pub from: ValidationFrom,
    pub warnings: Vec<Warning>,
}

const LIMIT_STREAM: u64 = 0x4c49_4d49_5400_0001;
const VALIDATION_STREAM: u64 = 0x5641_4c49_4400_0002;

/// Chooses the training and validation images among `labels`: at most `limit` images (the
/// first ones when they hold every class, else a stratified sample), of which `fraction` are
/// held out for validation as `from` says. Seeded by `seed`; `class_names` names the classes in
/// warnings.
pub fn select(
    labels: &[u8],
    class_names: &[String],
    limit: Option<usize>,
    fraction: f64,
    from: ValidationFrom,
    seed: u64,
) -> Selection {
    let mut warnings = Vec::new();
    let all: Vec<usize> = (0..labels.len()).collect();
    let used = match limit {
        Some(limit) if limit < labels.len() => {
            let first: Vec<usize> = (0..limit).collect();
            let missing = difference(&classes_of(labels, &all), &classes_of(labels, &first));
            if missing.is_empty() {
                first
            } else {
                warnings.push(Warning {
                    kind: WarningKind::LimitClasses,
                    message: format!(
                        "the first {limit} training images hold no {}{}: using a stratified random sample of {limit} images instead",
                        names(&missing, class_names),
                        sorted_note(labels)
                    ),
                });
                exactly(
                    stratified(
                        labels,
                        &all,
                        limit as f64 / labels.len() as f64,
                        seed ^ LIMIT_STREAM,
                    ),
                    limit,
                    seed ^ LIMIT_STREAM,
                )
            }
        }
        _ => all,
    };
    let validation_count = (used.len() as f64 * fraction).round() as usize;
    if validation_count == 0 {
        return Selection {
            train: used,
            validation: Vec::new(),
            from: if from == ValidationFrom::Random {
                ValidationFrom::Random
            } else {
                ValidationFrom::Last
            },
            warnings,
        };
    }
    let last = || {
        let split = used.len() - validation_count;
        (used[..split].to_vec(), used[split..].to_vec())
    };
    let random = || stratified(labels, &used, fraction, seed ^ VALIDATION_STREAM);
    let ((validation, train), from) = match from {
        ValidationFrom::Last => {
            let (train, validation) = last();
            ((validation, train), ValidationFrom::Last)
        }
        ValidationFrom::Random => (random(), ValidationFrom::Random),
        ValidationFrom::Auto => {
            let (train, validation) = last();
            let (train_classes, validation_classes) =
                (classes_of(labels, &train), classes_of(labels, &validation));
            let unlearnable = !difference(&validation_classes, &train_classes).is_empty();
            let sorted = looks_sorted(labels, &used);
            if !(unlearnable || sorted && train_classes != validation_classes) {
                ((validation, train), ValidationFrom::Last)
            } else {
                let share = (fraction * 100.0).round();
                warnings.push(Warning {
                    kind: WarningKind::ValidationResampled,
                    message: format!(
                        "the last {share}% of the training images holds {} while the rest holds {}{}: validating on a stratified random {share}% instead",
                        names(&validation_classes, class_names),
                        names(&train_classes, class_names),
                        sorted_note(labels)
                    ),
                });
                (random(), ValidationFrom::Random)
            }
        }
    };
    // Fewer validation images than classes cannot hold them all; that is no news.
    let too_few = validation.len() < classes_of(labels, &train).len();
    let untrained = !difference(
        &classes_of(labels, &validation),
        &classes_of(labels, &train),
    )
    .is_empty();
    if let Some(message) = class_mismatch(labels, &train, &validation, class_names)
        && (!too_few || untrained)
    {
        warnings.push(Warning {
            kind: WarningKind::ValidationClasses,
            message,
        });
    }
    Selection {
        train,
        validation,
        from,
        warnings,
    }
}

/// A seeded pick of `fraction` of each class's images among `indices`: (picked, the rest),
/// both in file order.
fn stratified(
    labels: &[u8],
    indices: &[usize],
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = vec![false; labels.len()];
    for class in classes_of(labels, indices) {
        let mut members: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| labels[i] == class)
            .collect();
        members.shuffle(&mut rng);
        let count = (members.len() as f64 * fraction).round() as usize;
        for &i in &members[..count.min(members.len())] {
            picked[i] = true;
        }
    }
    indices.iter().partition(|&&i| picked[i])
}

/// The `picked` part of a stratified pick made `count` long, in file order: rounding each
/// class's share can give a few more or fewer (none at all when `count` is below the number of
/// classes), so seeded picks of the rest are added, or of the picked removed.
fn exactly((picked, rest): (Vec<usize>, Vec<usize>), count: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(1));
    let mut result = if picked.len() < count {
        let mut rest = rest;
        rest.shuffle(&mut rng);
        rest.truncate(count - picked.len());
        [picked, rest].concat()
    } else {
        let mut picked = picked;
        picked.shuffle(&mut rng);
        picked.truncate(count);
        picked
    };
    result.sort_unstable();
    result
}

/// Why `validation` is not a fair test of `train`, if it is not: the classes one has and the
/// other lacks.
fn class_mismatch(
    labels: &[u8],
    train: &[usize],
    validation: &[usize],
    class_names: &[String],
) -> Option<String> {
    if validation.is_empty() {
        return None;
    }
    let (train_classes, validation_classes) =
        (classes_of(labels, train), classes_of(labels, validation));
    let unvalidated = difference(&train_classes, &validation_classes);
    let untrained = difference(&validation_classes, &train_classes);
    let mut parts = Vec::new();
    if !unvalidated.is_empty() {
        parts.push(format!(
            "the validation images hold no {}",
            names(&unvalidated, class_names)
        ));
    }
    if !untrained.is_empty() {
        parts.push(format!(
            "the training images hold no {}, which the model can never learn",
            names(&untrained, class_names)
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "{}: validate on a stratified random pick, or shuffle the data",
            parts.join(", and ")
        )
    })
}

/// Whether the labels at `indices` come in long runs of one class, as in data stored class by
/// class: fewer than half the class changes between neighbours that a random order would have.
fn looks_sorted(labels: &[u8], indices: &[usize]) -> bool {
    if indices.len() < 2 {
        return false;
    }
    let mut counts = [0usize; 256];
    for &i in indices {
        counts[usize::from(labels[i])] += 1;
    }
    let n = indices.len() as f64;
    let same_class: f64 = counts.iter().map(|&c| (c as f64 / n).powi(2)).sum();
    let expected = (n - 1.0) * (1.0 - same_class);
    let changes = indices
        .windows(2)
        .filter(|pair| labels[pair[0]] != labels[pair[1]])
        .count();
    (changes as f64) < expected / 2.0
}

fn sorted_note(labels: &[u8]) -> &'static str {
    let all: Vec<usize> = (0..labels.len()).collect();
    if looks_sorted(labels, &all) {
        " (the data looks sorted by class)"
    } else {
        ""
    }
}

fn classes_of(labels: &[u8], indices: &[usize]) -> BTreeSet<u8> {
    indices.iter().map(|&i| labels[i]).collect()
}

fn difference(a: &BTreeSet<u8>, b: &BTreeSet<u8>) -> BTreeSet<u8> {
    a.difference(b).copied().collect()
}

/// `class "7"` or `classes "8", "9"`, by name.
fn names(classes: &BTreeSet<u8>, class_names: &[String]) -> String {
    let listed: Vec<String> = classes
        .iter()
        .map(|&c| {
            let name = class_names
                .get(c as usize)
                .cloned()
                .unwrap_or_else(|| c.to_string());
            format!("\"{name}\"")
        })
        .collect();
    let noun = if listed.len() == 1 {
        "class"
    } else {
        "classes"
    };
    format!("{noun} {}", listed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names10() -> Vec<String> {
        (0..10).map(|c| c.to_string()).collect()
    }

    /// 10 classes of 20 images, stored class by class.
    fn sorted_labels() -> Vec<u8> {
        (0..200).map(|i| (i / 20) as u8).collect()
    }

    /// 10 classes of 100 images in a seeded random order.
    fn shuffled_1000() -> Vec<u8> {
        let mut labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        labels.shuffle(&mut StdRng::seed_from_u64(1));
        labels
    }

    /// The same classes in a seeded random order.
    fn shuffled_labels() -> Vec<u8> {
        let mut labels = sorted_labels();
        labels.shuffle(&mut StdRng::seed_from_u64(1));
        labels
    }

    #[test]
    fn random_order_keeps_keras_last_fraction() {
        let labels = shuffled_1000();
        assert!(!looks_sorted(&labels, &(0..1000).collect::<Vec<_>>()));
        let s = select(&labels, &names10(), None, 0.1, ValidationFrom::Auto, 42);
        assert_eq!(s.from, ValidationFrom::Last);
        assert_eq!(s.train, (0..900).collect::<Vec<_>>());
        assert_eq!(s.validation, (900..1000).collect::<Vec<_>>());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn a_class_missing_by_chance_from_a_random_order_is_named_not_resampled() {
        // 20 validation images of 10 classes in random order: some class is missing by chance.
        let labels = shuffled_labels();
        assert!(!looks_sorted(&labels, &(0..200).collect::<Vec<_>>()));
        let s = select(&labels, &names10(), None, 0.1, ValidationFrom::Auto, 42);
        assert_eq!(s.from, ValidationFrom::Last, "Keras's choice is kept");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert_eq!(s.warnings[0].kind, WarningKind::ValidationClasses);
        assert!(
            s.warnings[0]
                .message
                .contains("the validation images hold no class")
        );
    }

    #[test]
    fn sorted_data_gets_a_stratified_pick_and_a_warning() {
        let labels = sorted_labels();
        let s = select(&labels, &names10(), None, 0.1, ValidationFrom::Auto, 42);
        assert_eq!(s.from, ValidationFrom::Random);
        assert_eq!(s.validation.len(), 20);
        assert_eq!(
            classes_of(&labels, &s.validation).len(),
            10,
            "two of each class"
        );
        assert_eq!(s.train.len() + s.validation.len(), 200);
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.warnings[0].kind, WarningKind::ValidationResampled);
        let message = &s.warnings[0].message;
        assert!(message.contains("holds class \"9\" while"), "{message}");
        assert!(
            message.contains("(the data looks sorted by class)"),
            "{message}"
        );
        // Seeded: the same seed picks the same images, another seed others.
        let again = select(&labels, &names10(), None, 0.1, ValidationFrom::Auto, 42);
        assert_eq!(again, s);
        let other = select(&labels, &names10(), None, 0.1, ValidationFrom::Auto, 43);
        assert_ne!(other.validation, s.validation);
    }

    #[test]
    fn explicit_last_on_sorted_data_warns_naming_the_classes() {
        let labels = sorted_labels();
        let s = select(&labels, &names10(), None, 0.1, ValidationFrom::Last, 42);
        assert_eq!(s.validation, (180..200).collect::<Vec<_>>());
        assert_eq!(s.warnings.len(), 1);
        let message = &s.warnings[0].message;
        assert_eq!(s.warnings[0].kind, WarningKind::ValidationClasses);
        assert!(
            message.contains("validation images hold no classes \"0\", \"1\""),
            "{message}"
        );
        assert!(
            message.contains("training images hold no class \"9\""),
            "{message}"
        );
        assert!(message.contains("stratified random pick"), "{message}");
    }

    #[test]
    fn limit_on_sorted_data_samples_every_class() {
        let labels = sorted_labels();
        let s = select(&labels, &names10(), Some(50), 0.0, ValidationFrom::Auto, 42);
        assert_eq!(s.train.len(), 50);
        assert_eq!(classes_of(&labels, &s.train).len(), 10);
        assert_eq!(s.warnings[0].kind, WarningKind::LimitClasses);
        assert!(
            s.warnings[0].message.contains("hold no classes \"3\""),
            "{:?}",
            s.warnings
        );
        // On data in random order the first N are kept, as before.
        let labels = shuffled_1000();
        let s = select(
            &labels,
            &names10(),
            Some(100),
            0.0,
            ValidationFrom::Auto,
            42,
        );
        assert_eq!(s.train, (0..100).collect::<Vec<_>>());
        assert!(s.warnings.is_empty());
    }

    /// A limit whose classes' shares round to more or fewer images (none at all below one an
    /// image a class) still gives exactly that many: `train --limit 1` trains on one image.
    #[test]
    fn a_limit_gives_exactly_that_many_images() {
        let labels = sorted_labels();
        for limit in [1, 3, 9, 11, 14, 199] {
            let s = select(
                &labels,
                &names10(),
                Some(limit),
                0.0,
                ValidationFrom::Auto,
                42,
            );
            assert_eq!(s.train.len(), limit);
            assert!(
                s.train.windows(2).all(|pair| pair[0] < pair[1]),
                "file order"
            );
            let again = select(
                &labels,
                &names10(),
                Some(limit),
                0.0,
                ValidationFrom::Auto,
                42,
            );
            assert_eq!(again.train, s.train, "seeded");
        }
        let s = select(&labels, &names10(), Some(1), 0.1, ValidationFrom::Auto, 42);
        assert_eq!((s.train.len(), s.validation.len()), (1, 0));
    }

    #[test]
    fn fewer_validation_images_than_classes_are_no_news() {
        let labels = shuffled_1000();
        let s = select(&labels, &names10(), Some(64), 0.1, ValidationFrom::Auto, 42);
        assert_eq!(s.validation.len(), 6);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn a_class_too_small_to_validate_is_named() {
        // Class 2 has one image, which stays in training.
        let mut labels: Vec<u8> = (0..40).map(|i| (i % 2) as u8).collect();
        labels.push(2);
        let s = select(
            &labels,
            &["a".into(), "b".into(), "c".into()],
            None,
            0.2,
            ValidationFrom::Random,
            1,
        );
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0]
                .message
                .contains("validation images hold no class \"c\"")
        );
    }
}
