//! Colours: the viridis colour map, luminance for contrasting text, the tab10 palette for
//! series, and the greys used for text and axes.

use plotters::style::RGBColor;

/// Colour of all text.
pub(crate) const TEXT: RGBColor = RGBColor(32, 32, 32);
/// Colour of axis lines, ticks and frames.
pub(crate) const AXIS: RGBColor = RGBColor(64, 64, 64);

/// Matplotlib's viridis sampled at nine evenly spaced points.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (72, 40, 120),
    (62, 73, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (110, 206, 88),
    (253, 231, 37),
];

/// A perceptual colour map (viridis): dark purple at 0, teal at 0.5, yellow at 1.
///
/// `t` is clamped to `[0, 1]`; NaN maps to 0. Interpolates linearly between nine control points.
pub fn colormap(t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let scaled = t * (VIRIDIS.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(VIRIDIS.len() - 2);
    let f = scaled - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let lerp = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Relative luminance (0 dark .. 1 bright) of an sRGB colour, as WCAG defines it.
pub(crate) fn luminance(c: RGBColor) -> f64 {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
}

/// Matplotlib's tab10 colours, cycled through for series.
pub(crate) const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_runs_from_dark_purple_to_yellow_and_clamps() {
        assert_eq!(colormap(0.0), RGBColor(68, 1, 84));
        assert_eq!(colormap(1.0), RGBColor(253, 231, 37));
        assert_ne!(colormap(0.0), colormap(1.0));
        assert_eq!(colormap(-3.0), colormap(0.0));
        assert_eq!(colormap(7.0), colormap(1.0));
        assert_eq!(colormap(f64::NAN), colormap(0.0));
        // Perceptual: brightness rises steadily.
        let lum: Vec<f64> = (0..=20)
            .map(|i| luminance(colormap(i as f64 / 20.0)))
            .collect();
        assert!(lum.windows(2).all(|w| w[1] > w[0]), "{lum:?}");
    }
}
