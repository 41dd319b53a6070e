//! Writes a folder of labelled pictures to try `mnist-cnn import` on: ten classes of dark
//! shapes on paper (`shape-0` .. `shape-9`), or with `--color`, three classes told apart by
//! colour alone, or with `--mnist`, the first N MNIST training digits of each class as dark
//! ink on paper (a small real data set). Pictures are 36x36 (or `--side N`; MNIST's are 28x28),
//! a third of the shapes RGBA with transparent paper.
//!
//! ```sh
//! cargo run --release --example shape_pictures -- pictures 200
//! mnist-cnn import pictures --out data/shapes --test-fraction 0.2
//! ```

use std::path::PathBuf;

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};

fn shape_picture(class: usize, variant: usize, side: u32) -> DynamicImage {
    let s = f64::from(side) / 36.0;
    let jitter = |k: usize| ((variant / k % 5) as f64 - 2.0) * s;
    let (cx, cy) = (
        f64::from(side) / 2.0 + jitter(1),
        f64::from(side) / 2.0 + jitter(5),
    );
    let radius = (10.0 + (variant / 25 % 4) as f64) * s;
    let width = (1.5 + (variant / 7 % 2) as f64) * s;
    let ink = |x: f64, y: f64| -> bool {
        let (dx, dy) = (x - cx, y - cy);
        let distance = (dx * dx + dy * dy).sqrt();
        dx.abs() <= radius
            && dy.abs() <= radius
            && match class {
                0 => dy.abs() <= width,
                1 => dx.abs() <= width,
                2 => (dx - dy).abs() <= width * 1.4,
                3 => (dx + dy).abs() <= width * 1.4,
                4 => (distance - radius * 0.8).abs() <= width,
                5 => distance <= radius * 0.6,
                6 => dx.abs() <= width || dy.abs() <= width,
                7 => (dx - dy).abs() <= width * 1.4 || (dx + dy).abs() <= width * 1.4,
                8 => radius - dx.abs().max(dy.abs()) <= width,
                _ => dy >= radius * 0.3 && dy <= radius * 0.3 + 2.0 * width,
            }
    };
    if variant.is_multiple_of(3) {
        DynamicImage::ImageRgba8(RgbaImage::from_fn(side, side, |x, y| {
            if ink(f64::from(x), f64::from(y)) {
                Rgba([10, 10, 30, 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        }))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_fn(side, side, |x, y| {
            if ink(f64::from(x), f64::from(y)) {
                Rgb([20, 20, 20])
            } else {
                Rgb([240, 235, 225])
            }
        }))
    }
}

fn colour_picture(class: usize, variant: usize, side: u32) -> DynamicImage {
    let s = f64::from(side) / 26.0;
    let (cx, cy) = (
        (10.0 + (variant % 7) as f64) * s,
        (10.0 + (variant / 7 % 7) as f64) * s,
    );
    let radius = (4.0 + (variant % 3) as f64) * s;
    let shade = 170 + (variant * 13 % 80) as u8;
    DynamicImage::ImageRgb8(RgbImage::from_fn(side, side, |x, y| {
        let d = ((f64::from(x) - cx).powi(2) + (f64::from(y) - cy).powi(2)).sqrt();
        if d > radius {
            return Rgb([15, 15, 15]);
        }
        let mut pixel = [40u8; 3];
        pixel[class] = shade;
        Rgb(pixel)
    }))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let color = args.iter().any(|a| a == "--color");
    let side = args
        .iter()
        .position(|a| a == "--side")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(36), |s| s.parse())?;
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--side"))
        .map(|(_, a)| a)
        .collect();
    let out = PathBuf::from(positional.first().map_or("pictures", |s| s.as_str()));
    let per_class: usize = positional.get(1).map_or(Ok(100), |s| s.parse())?;
    if args.iter().any(|a| a == "--mnist") {
        let data_dir = std::env::var("MNIST_DATA_DIR").unwrap_or_else(|_| "data/mnist".into());
        let split = mnist_cnn::data::load_split(
            std::path::Path::new(&data_dir),
            mnist_cnn::data::SplitKind::Train,
        )?;
        let mut written = [0usize; 10];
        for index in 0..split.len() {
            let label = usize::from(split.labels[index]);
            if label >= 10 || written[label] >= per_class {
                continue;
            }
            let folder = out.join(label.to_string());
            std::fs::create_dir_all(&folder)?;
            let paper: Vec<u8> = split.image(index).iter().map(|&p| 255 - p).collect();
            image::GrayImage::from_raw(split.cols as u32, split.rows as u32, paper)
                .expect("a whole image")
                .save(folder.join(format!("{index:05}.png")))?;
            written[label] += 1;
        }
        println!(
            "wrote {per_class} MNIST digits of each class to {}",
            out.display()
        );
        return Ok(());
    }
    let classes: Vec<String> = if color {
        ["red", "green", "blue"].map(String::from).to_vec()
    } else {
        (0..10).map(|c| format!("shape-{c}")).collect()
    };
    for (class, name) in classes.iter().enumerate() {
        let folder = out.join(name);
        std::fs::create_dir_all(&folder)?;
        for variant in 0..per_class {
            let picture = if color {
                colour_picture(class, variant, side)
            } else {
                shape_picture(class, variant, side)
            };
            picture.save(folder.join(format!("{variant:04}.png")))?;
        }
    }
    println!(
        "wrote {} classes of {per_class} pictures ({side}x{side}) to {}",
        classes.len(),
        out.display()
    );
    Ok(())
}
