//! `train --init-from DIR`: the weights a run starts from when they are not fresh ones.

use std::path::Path;

use burn::prelude::Device;

use crate::error::{Error, Result};
use crate::model::{Architecture, InputShape, Network};
use crate::run::TrainedRun;

/// The network of the run in `dir` (trained or imported), on `device`, for a run that trains
/// `architecture` on data of `shape`. Its class names may differ (fine-tuning on other
/// classes of the same number); its architecture and shape may not.
pub(crate) fn network_from_run(
    dir: &Path,
    architecture: Architecture,
    shape: InputShape,
    device: &Device,
) -> Result<Network> {
    let source = TrainedRun::open(dir, device)?;
    let refuse = |reason: String| Error::InitMismatch {
        dir: dir.to_path_buf(),
        reason,
    };
    let theirs = source.info.config.architecture;
    if theirs != architecture {
        return Err(refuse(format!(
            "it holds a {theirs} model, and this run trains a {architecture}"
        )));
    }
    let built_for = source.info.shape;
    if built_for != shape {
        return Err(refuse(format!(
            "its model was built for {}, and the training data is {}",
            describe(built_for),
            describe(shape)
        )));
    }
    Ok(source.network)
}

fn describe(shape: InputShape) -> String {
    format!(
        "{}x{} images of {} channel{} in {} classes",
        shape.cols,
        shape.rows,
        shape.channels,
        if shape.channels == 1 { "" } else { "s" },
        shape.classes
    )
}
