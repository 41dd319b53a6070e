//! The bundled font (DejaVu Sans), registered with plotters once per process. Below both the
//! canvas (`render`, which registers it before drawing) and `text` (which measures and draws
//! with it).

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// The font family every text element uses; registered from the bundled TTF.
const FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static FONT_REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Registers the bundled font with plotters (once per process); text can be measured or drawn
/// only after this succeeded.
pub(crate) fn ensure_font() -> std::result::Result<(), String> {
    FONT_REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the bundled font DejaVuSans.ttf could not be loaded".to_string())
        })
        .clone()
}

/// The bundled font at `size`, for plotters' own text (chart captions, axis labels, legends).
pub(crate) fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FAMILY), size, FontStyle::Normal)
}
