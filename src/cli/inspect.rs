//! `inspect`: pictures (or with --json the numbers) of every layer for one image.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::data::image::Invert;
use mnist_cnn::data::{self, SplitKind};
use mnist_cnn::inspect;
use mnist_cnn::run::TrainedRun;

use super::{Session, values};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A PNG or JPEG picture, any size, instead of an image of the data set; it is prepared
    /// as the model's training pictures were (its pipeline, from run.json), as `predict` does
    #[arg(value_name = "IMAGE", conflicts_with = "index")]
    pub image: Option<PathBuf>,
    /// Which image of the data set to look at (0-based) [default: 1210]
    #[arg(long)]
    pub index: Option<usize>,
    /// Split for --index
    #[arg(long, value_parser = values::choice::<SplitKind>(), default_value = SplitKind::Train.name())]
    pub split: SplitKind,
    /// Directory of a trained model (as written by `train`), or the name of a run in runs/
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Directory for the pictures [default: MODEL_DIR/inspect-<split>-<index>, or
    /// MODEL_DIR/inspect-<name of the picture>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Invert the picture so the subject is light on dark [default: as the model's pipeline does]
    #[arg(long, value_parser = values::choice::<Invert>())]
    pub invert: Option<Invert>,
    /// Backend of burn to run the layers on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_parser = values::choice::<BackendKind>(), default_value = BackendKind::Flex.name())]
    pub backend: BackendKind,
}

pub(crate) fn run_inspect(session: &Session, mut args: InspectArgs) -> Result<()> {
    args.model_dir = mnist_cnn::run::catalog::find_run_dir(&args.model_dir);
    let device = args.backend.start()?.device();
    let run = TrainedRun::open(&args.model_dir, &device)?;
    let info = &run.info;
    let (pixels, what, folder, label) = match &args.image {
        Some(path) => {
            let pixels = info.picture_pipeline(args.invert)?.load(path)?;
            let stem = path
                .file_stem()
                .map_or("picture".into(), |s| s.to_string_lossy());
            (
                pixels,
                path.display().to_string(),
                format!("inspect-{stem}"),
                None,
            )
        }
        None => {
            let index = args.index.unwrap_or(1210);
            let split = data::load_split(&session.data_dir, args.split)?;
            info.check_data(&split, &session.data_dir)?;
            let pixels = split.checked_image(index, args.split)?.to_vec();
            let label = usize::from(split.labels[index]);
            let what = format!("{} image {index}", args.split);
            (
                pixels,
                what,
                format!("inspect-{}-{index}", args.split),
                Some(label),
            )
        }
    };
    let inspection = inspect::inspect(
        &run.network,
        &info.class_names,
        &pixels,
        info.shape,
        &device,
    );
    if session.json {
        return session
            .print_json(&json!({ "image": what, "label": label, "inspection": inspection }));
    }
    let out = args.out.unwrap_or_else(|| args.model_dir.join(folder));
    let written = inspect::write_pictures(&inspection, &run.network, &out, &what)?;
    if session.human() {
        let label = label
            .and_then(|l| info.class_names.get(l))
            .map_or(String::new(), |name| format!(" (label {name})"));
        let top: Vec<String> = inspection
            .top
            .iter()
            .take(3)
            .map(|c| format!("{} ({:.1}%)", c.name, c.probability * 100.0))
            .collect();
        println!("{what}{label}: {}", top.join(", "));
        for path in written {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
