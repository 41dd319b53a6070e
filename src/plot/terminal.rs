//! A plain-text preview of a digit for the terminal, drawn with half-block characters.

/// Pixels at or above this value count as ink in [`terminal_preview`].
const INK_THRESHOLD: u8 = 128;

/// A plain-text preview of a grayscale image (bright = ink) for a terminal: one character per
/// column and per two pixel rows, using the half blocks `▀`, `▄`, `█` and space, so a 28x28
/// digit becomes 14 lines of 28 characters, joined by `\n` without a trailing newline. An odd
/// last row is paired with a dark row. Missing pixels (a short slice) count as dark.
pub fn terminal_preview(pixels: &[u8], rows: usize, cols: usize) -> String {
    let ink = |r: usize, c: usize| {
        r < rows
            && pixels
                .get(r * cols + c)
                .is_some_and(|&v| v >= INK_THRESHOLD)
    };
    let mut lines = Vec::with_capacity(rows.div_ceil(2));
    for r in (0..rows).step_by(2) {
        let line: String = (0..cols)
            .map(|c| match (ink(r, c), ink(r + 1, c)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            })
            .collect();
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_preview_marks_bright_pixels_with_half_blocks() {
        let mut pixels = vec![0u8; 28 * 28];
        // A bright bar on rows 4..=6, columns 10..14 (row 6 pairs with dark row 7).
        for r in 4..=6 {
            for c in 10..14 {
                pixels[r * 28 + c] = 200;
            }
        }
        pixels[27 * 28] = 255; // bottom-left corner: lower half of the last line
        let text = terminal_preview(&pixels, 28, 28);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 14);
        assert!(lines.iter().all(|l| l.chars().count() == 28));
        assert_eq!(
            lines[2],
            format!("{}████{}", " ".repeat(10), " ".repeat(14))
        );
        assert_eq!(
            lines[3],
            format!("{}▀▀▀▀{}", " ".repeat(10), " ".repeat(14))
        );
        assert!(lines[13].starts_with('▄'));
        let marked: usize = lines
            .iter()
            .map(|l| l.chars().filter(|&c| c != ' ').count())
            .sum();
        assert_eq!(marked, 9);
        assert!(!text.contains('\x1b'));
        // Odd heights round up; a short slice does not panic.
        assert_eq!(terminal_preview(&[255; 3], 3, 1), "█\n▀");
        assert_eq!(terminal_preview(&[], 2, 2), "  ");
    }
}
