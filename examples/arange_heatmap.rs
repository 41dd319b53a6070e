//! The seed notebook's first figure, `sns.heatmap(np.arange(100).reshape((10, 10)))`, drawn with
//! this crate's heatmap.
//!
//! Usage: `cargo run --release --example arange_heatmap [OUTPUT.png]` (default `arange_heatmap.png`).

use std::path::PathBuf;

use mnist_cnn::plot::{HeatmapOptions, heatmap};

fn main() -> anyhow::Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("arange_heatmap.png"));
    let values: Vec<f64> = (0..100).map(f64::from).collect();
    let options = HeatmapOptions::new("np.arange(100).reshape((10, 10))", (0.0, 99.0));
    heatmap(&path, &values, 10, 10, &options)?;
    println!("wrote {}", path.display());
    Ok(())
}
