//! Line charts of training histories, like matplotlib's `plt.plot` of a Keras history: one
//! coloured line with point markers per series, a legend, a title and axis descriptions.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::RGBColor;

use super::color::{AXIS, TAB10, TEXT};
use super::render::{Area, DrawResult, plot_error, render};
use super::text::{DESC_SIZE, TICK_SIZE, TITLE_SIZE, font, plotters_bias};
use super::ticks::trim_number;
use crate::error::Result;

/// One named line of a [`line_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// `[min, max]` widened by 5% on each side; a zero-width range is widened around its value.
fn padded_range(min: f64, max: f64) -> (f64, f64) {
    let span = max - min;
    let pad = if span > 0.0 {
        span * 0.05
    } else if min != 0.0 {
        min.abs() * 0.1
    } else {
        0.5
    };
    (min - pad, max + pad)
}

/// How one line of a chart is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineStyle {
    pub color: RGBColor,
    pub dashed: bool,
}

/// Draws a line chart like matplotlib's `plt.plot` of a Keras history: each series a coloured
/// line with point markers, a legend, the title and axis descriptions. 800x500 pixels.
///
/// Axis ranges cover all points with 5% margins; a single point or a constant series gets a
/// range around its value. Non-finite points (a diverged loss) are skipped; it is an error when
/// there are no series, a series has no points, or no point at all is finite.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    check_series(path, series)?;
    let styles: Vec<LineStyle> = (0..series.len())
        .map(|i| LineStyle {
            color: TAB10[i % TAB10.len()],
            dashed: false,
        })
        .collect();
    render(
        path,
        (800, 500),
        |area| {
            draw_chart(
                &area.margin(10, 10, 10, 20),
                title,
                (x_desc, y_desc),
                series,
                &styles,
            )
        },
        |_, _| {},
    )
}

/// Refuses what no chart can show: no series, a series without points, no finite point.
pub(crate) fn check_series(path: &Path, series: &[Series]) -> Result<()> {
    if series.is_empty() {
        return Err(plot_error(path, "line chart needs at least one series"));
    }
    if let Some(s) = series.iter().find(|s| s.points.is_empty()) {
        return Err(plot_error(
            path,
            format!("series \"{}\" has no points", s.name),
        ));
    }
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    if !series.iter().flat_map(|s| &s.points).any(|p| finite(&p)) {
        return Err(plot_error(path, "line chart has no finite points"));
    }
    Ok(())
}

/// Draws one chart of `series` (checked by [`check_series`]) on `area`, each in its style.
pub(crate) fn draw_chart(
    area: &Area,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    styles: &[LineStyle],
) -> DrawResult {
    let finite: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = || finite.iter().flatten();
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (x_min, x_max) = fold(|p| p.0);
    let (y_min, y_max) = fold(|p| p.1);
    let x_range = padded_range(x_min, x_max);
    let y_range = padded_range(y_min, y_max);
    let x_whole = all().all(|p| p.0.fract() == 0.0);

    // Put the legend where the data is not: look at the right third of the x range.
    let cut = x_min + (x_max - x_min) * 2.0 / 3.0;
    let mid = (y_range.0 + y_range.1) / 2.0;
    let (high, low) =
        all().filter(|p| p.0 >= cut).fold(
            (0, 0),
            |(h, l), p| if p.1 >= mid { (h + 1, l) } else { (h, l + 1) },
        );
    let legend_pos = if high > low {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };

    let mut chart = ChartBuilder::on(area)
        .caption(title, font(TITLE_SIZE).color(&TEXT))
        .margin(8)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)?;
    let x_format = |v: &f64| {
        if x_whole && v.fract() != 0.0 {
            String::new() // no "1.5" epochs
        } else {
            trim_number(*v)
        }
    };
    let y_format = |v: &f64| trim_number(*v);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_labels(if x_whole {
            ((x_max - x_min) as usize + 1).clamp(2, 12)
        } else {
            10
        })
        .y_labels(8)
        .label_style(font(TICK_SIZE).color(&TEXT))
        .axis_desc_style(font(DESC_SIZE).color(&TEXT))
        .y_label_offset(plotters_bias(TICK_SIZE))
        .bold_line_style(RGBColor(225, 225, 225))
        .max_light_lines(0)
        .axis_style(AXIS)
        .draw()?;
    for ((s, points), style) in series.iter().zip(&finite).zip(styles) {
        let color = style.color;
        let line = color.stroke_width(2);
        let drawn = if style.dashed {
            chart.draw_series(DashedLineSeries::new(points.iter().copied(), 8, 5, line))?
        } else {
            chart.draw_series(LineSeries::new(points.iter().copied(), line))?
        };
        // A dashed line's legend has a gap in the middle.
        let (gap_start, gap_end) = if style.dashed { (8, 16) } else { (12, 12) };
        drawn.label(s.name.clone()).legend(move |(x, y)| {
            // Plotters centres the marker on the text box, not on the glyphs.
            EmptyElement::at((x, y - plotters_bias(TICK_SIZE)))
                + PathElement::new(vec![(0, 0), (gap_start, 0)], line)
                + PathElement::new(vec![(gap_end, 0), (24, 0)], line)
                + Circle::new((12, 0), 3, color.filled())
        });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend_pos)
        .margin(12)
        .legend_area_size(32)
        .label_font(font(TICK_SIZE).color(&TEXT))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::{assert_only_file, assert_plot_error, decode};

    fn history(values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 + 1.0, v))
            .collect()
    }

    #[test]
    fn line_chart_draws_each_series_in_its_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.png");
        let series = [
            Series {
                name: "train".into(),
                points: history(&[0.91, 0.95, 0.97, 0.98, 0.985]),
            },
            Series {
                name: "test".into(),
                points: history(&[0.93, 0.96, 0.975, 0.982, 0.987]),
            },
        ];
        line_chart(&path, "Model accuracy", "epoch", "accuracy", &series).unwrap();
        assert_only_file(dir.path(), "accuracy.png");
        let img = decode(&path);
        assert_eq!(img.dimensions(), (800, 500));
        let count = |c: RGBColor| {
            img.pixels()
                .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
                .count()
        };
        assert!(count(TAB10[0]) > 200, "first series missing");
        assert!(count(TAB10[1]) > 200, "second series missing");
    }

    #[test]
    fn line_chart_handles_single_points_constants_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        for (name, points) in [
            ("single.png", vec![(1.0, 0.25)]),
            ("constant.png", history(&[0.5, 0.5, 0.5])),
            ("zero.png", history(&[0.0, 0.0])),
            ("nan.png", history(&[0.3, f64::NAN, 0.2])),
        ] {
            let path = dir.path().join(name);
            let series = [Series {
                name: "loss".into(),
                points,
            }];
            line_chart(&path, "Model loss", "epoch", "loss", &series).unwrap();
            assert_eq!(decode(&path).dimensions(), (800, 500), "{name}");
        }
    }

    #[test]
    fn line_chart_rejects_missing_data_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        assert_plot_error(
            line_chart(&path, "t", "x", "y", &[]),
            &path,
            "at least one series",
        );
        let empty = Series {
            name: "val_loss".into(),
            points: vec![],
        };
        assert_plot_error(
            line_chart(&path, "t", "x", "y", &[empty]),
            &path,
            "val_loss",
        );
        let nan = Series {
            name: "loss".into(),
            points: vec![(1.0, f64::NAN)],
        };
        assert_plot_error(line_chart(&path, "t", "x", "y", &[nan]), &path, "finite");
    }
}
