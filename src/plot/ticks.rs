//! Axis values: round tick positions for a range and their labels.

/// About `target` round tick values (steps of 1, 2 or 5 times a power of ten) within `[lo, hi]`,
/// with the step.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return (vec![lo], 1.0);
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil();
    let mut ticks = Vec::new();
    let mut k = first;
    while k * step <= hi + step * 1e-9 && ticks.len() < 1000 {
        let v = k * step;
        ticks.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1.0;
    }
    (ticks, step)
}

/// Formats a tick value with just enough decimals for `step`.
pub(crate) fn format_tick(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).max(0.0) as usize
    } else {
        2
    };
    format!("{v:.decimals$}")
}

/// Trims a tick value to at most 4 decimals without trailing zeros ("3", "0.25").
pub(crate) fn trim_number(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside_the_range() {
        assert_eq!(
            nice_ticks(0.0, 99.0, 6).0,
            vec![0.0, 20.0, 40.0, 60.0, 80.0]
        );
        let (ticks, step) = nice_ticks(0.0, 1.0, 5);
        let labels: Vec<String> = ticks.iter().map(|&v| format_tick(v, step)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let (ticks, step) = nice_ticks(-0.3, 0.3, 6);
        assert_eq!(step, 0.1);
        assert_eq!(format_tick(ticks[0], step), "-0.3");
        assert!(ticks.contains(&0.0));
        assert_eq!(format_tick(250.0, 50.0), "250");
    }
}
