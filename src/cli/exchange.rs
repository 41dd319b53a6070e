//! `import-model` and `export`: models in from Keras and safetensors, out to ONNX and
//! safetensors (the work is in `mnist_cnn::exchange`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use mnist_cnn::exchange::{self, ExportFormat, ImportOptions};
use mnist_cnn::model::Architecture;
use mnist_cnn::run::RUN_FILE;

use super::{Session, values};

#[derive(Debug, Args)]
pub struct ImportModelArgs {
    /// The model: a Keras 3 .keras file, a legacy Keras .h5 model, a .weights.h5 file (with
    /// --model), or a .safetensors file written by `mnist-cnn export`
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Directory for the new run (must not hold a run already)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The architecture: needed for a .weights.h5 file, checked against the others
    #[arg(long, value_parser = values::choice::<Architecture>())]
    pub model: Option<Architecture>,
    /// What the model multiplies raw 0-255 pixels by before its first layer: 1 for the
    /// tutorial's raw pixels, 1/255 for pixels scaled to [0, 1] [default: what the file says;
    /// else 1 for Keras files, 1/255 for safetensors]
    #[arg(long, value_name = "SCALE", value_parser = values::pixel_scale)]
    pub pixel_scale: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Directory of a trained or imported model, or the name of a run in runs/
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// The file format
    #[arg(long, value_parser = values::choice::<ExportFormat>())]
    pub format: ExportFormat,
    /// The file to write
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
}

pub(crate) fn run_import_model(session: &Session, args: ImportModelArgs) -> Result<()> {
    let options = ImportOptions {
        architecture: args.model,
        pixel_scale: args.pixel_scale,
    };
    let run = exchange::import_model(&args.file, &args.out, &options)?;
    let source = run
        .imported
        .as_ref()
        .expect("an imported run records its source");
    if session.human() {
        println!(
            "imported {} ({}, sha256 {}): a {} for {}x{} images of {} in {} classes, {} parameters",
            args.file.display(),
            source.format,
            &source.sha256[..16],
            run.config.architecture,
            run.shape.cols,
            run.shape.rows,
            super::counted(run.shape.channels, "channel"),
            run.shape.classes,
            run.parameters
        );
        println!(
            "the model expects raw pixels x {}{}; folded into its first layer",
            describe_scale(source.pixel_scale),
            source
                .rescaling
                .map(|r| format!(", then its Rescaling layer (x {} + {})", r.scale, r.offset))
                .unwrap_or_default()
        );
        println!("wrote {}/{}", args.out.display(), RUN_FILE);
        println!(
            "next: mnist-cnn evaluate --model-dir {}",
            args.out.display()
        );
    }
    session.print_json(&json!({ "out": args.out, "run": run }))
}

pub(crate) fn run_export(session: &Session, mut args: ExportArgs) -> Result<()> {
    args.model_dir = mnist_cnn::run::catalog::find_run_dir(&args.model_dir);
    let exported = exchange::export(&args.model_dir, args.format, &args.output)?;
    if session.human() {
        println!(
            "wrote {} ({} bytes): the {} of {}, {} classes",
            exported.path.display(),
            exported.bytes,
            exported.architecture,
            args.model_dir.display(),
            exported.shape.classes
        );
        match exported.format {
            ExportFormat::Onnx => println!(
                "input \"pixels\": float32 [N, {}, {}, {}], raw pixels 0-255; output \"probabilities\": [N, {}]",
                exported.shape.channels,
                exported.shape.rows,
                exported.shape.cols,
                exported.shape.classes
            ),
            ExportFormat::Safetensors => println!(
                "PyTorch names and layouts; the module reads float32 [N, {}, {}, {}] pixels / 255 (see the README)",
                exported.shape.channels, exported.shape.rows, exported.shape.cols
            ),
        }
    }
    session.print_json(&exported)
}

/// `1/255` for 1/255, else the number.
fn describe_scale(scale: f64) -> String {
    if (scale * 255.0 - 1.0).abs() < 1e-12 {
        "1/255".into()
    } else {
        scale.to_string()
    }
}
