//! Several runs' training curves overlaid: accuracy on the left, loss on the right, one colour
//! per run, training solid and validation dashed, with a legend (`mnist-cnn runs compare`).

use std::path::Path;

use super::color::TAB10;
use super::line_chart::{LineStyle, Series, check_series, draw_chart};
use super::render::{plot_error, render};
use crate::error::Result;

/// One run's curves, as (epoch, value) points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunCurves {
    pub name: String,
    pub accuracy: Vec<(f64, f64)>,
    pub val_accuracy: Vec<(f64, f64)>,
    pub loss: Vec<(f64, f64)>,
    pub val_loss: Vec<(f64, f64)>,
}

/// Draws the runs' accuracy and loss side by side, 1600x560 pixels. Each run needs at least
/// one training point; runs beyond ten reuse the colours.
pub fn runs_chart(path: &Path, runs: &[RunCurves]) -> Result<()> {
    if runs.is_empty() {
        return Err(plot_error(path, "no runs to compare"));
    }
    let panel = |train: fn(&RunCurves) -> &Vec<(f64, f64)>,
                 validation: fn(&RunCurves) -> &Vec<(f64, f64)>| {
        let mut series = Vec::new();
        let mut styles = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let color = TAB10[i % TAB10.len()];
            series.push(Series {
                name: run.name.clone(),
                points: train(run).clone(),
            });
            styles.push(LineStyle {
                color,
                dashed: false,
            });
            if !validation(run).is_empty() {
                series.push(Series {
                    name: format!("{} (validation)", run.name),
                    points: validation(run).clone(),
                });
                styles.push(LineStyle {
                    color,
                    dashed: true,
                });
            }
        }
        (series, styles)
    };
    let accuracy = panel(|r| &r.accuracy, |r| &r.val_accuracy);
    let loss = panel(|r| &r.loss, |r| &r.val_loss);
    check_series(path, &accuracy.0)?;
    check_series(path, &loss.0)?;
    render(
        path,
        (1600, 560),
        |area| {
            let (left, right) = area.split_horizontally(800);
            draw_chart(
                &left.margin(10, 10, 10, 20),
                "Accuracy (dashed: validation)",
                ("epoch", "accuracy"),
                &accuracy.0,
                &accuracy.1,
            )?;
            draw_chart(
                &right.margin(10, 10, 10, 20),
                "Loss (dashed: validation)",
                ("epoch", "loss"),
                &loss.0,
                &loss.1,
            )
        },
        |_, _| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::decode;

    fn curves(name: &str, offset: f64, validation: bool) -> RunCurves {
        let points = |base: f64| {
            (1..=4)
                .map(|e| (e as f64, base + offset * e as f64))
                .collect()
        };
        RunCurves {
            name: name.into(),
            accuracy: points(0.9),
            val_accuracy: if validation { points(0.92) } else { vec![] },
            loss: points(0.3),
            val_loss: if validation { points(0.2) } else { vec![] },
        }
    }

    #[test]
    fn each_run_has_its_colour_in_both_panels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compare.png");
        runs_chart(&path, &[curves("a", 0.01, true), curves("b", -0.01, false)]).unwrap();
        let img = decode(&path);
        assert_eq!(img.dimensions(), (1600, 560));
        for (i, color) in TAB10[..2].iter().enumerate() {
            for (half, range) in [("left", 0..800), ("right", 800..1600)] {
                let count = img
                    .enumerate_pixels()
                    .filter(|(x, _, p)| {
                        range.contains(x) && p[0] == color.0 && p[1] == color.1 && p[2] == color.2
                    })
                    .count();
                assert!(count > 100, "run {i} missing on the {half}: {count}");
            }
        }
        assert!(runs_chart(&path, &[]).is_err());
        assert!(runs_chart(&dir.path().join("x.png"), &[RunCurves::default()]).is_err());
        assert!(!dir.path().join("x.png").exists());
    }
}
