//! What to do next, for the library's errors: the library names no command or flag, so the
//! command line adds them here.

use mnist_cnn::Error;

/// A hint for `error` raised by the subcommand `command`, if one helps.
pub fn hint(error: &anyhow::Error, command: &str) -> Option<String> {
    let error = error.downcast_ref::<Error>()?;
    let hint = match error {
        Error::NoRun { .. } if command == "train" => {
            "start a new run without --resume, or pass the --out of an existing one".into()
        }
        Error::NoRun { .. } => "run `mnist-cnn train` first, or pass --model-dir".into(),
        Error::MissingData { .. } => "run `mnist-cnn download`, or pass --data-dir".into(),
        Error::DataMismatch(_) => {
            "train a model on this data with `mnist-cnn --data-dir DIR train`".into()
        }
        Error::IncompatibleModel { architecture, .. } => {
            format!("retrain with `mnist-cnn train --model {architecture}`")
        }
        Error::ResumeMismatch { .. } => {
            "pass the same flags as that run (apart from --epochs), or use another --out".into()
        }
        Error::RunLocked { .. } if command == "runs" => "wait for it to finish".into(),
        Error::RunLocked { .. } => "wait for it to finish, or use another --out".into(),
        Error::RunExists { .. } => {
            "continue it with --resume, replace it with --overwrite, or choose another --out".into()
        }
        Error::InitMismatch { .. } => {
            "pass the --model of that run and train on data of its image size and classes".into()
        }
        Error::ForeignModel { .. } => {
            "mnist-cnn runs the tutorial's CNN and the MLP (see `mnist-cnn help import-model`)"
                .into()
        }
        Error::ModelFile { reason, .. } if reason.contains("does not say its architecture") => {
            "pass --model cnn or --model mlp".into()
        }
        Error::ModelArchitecture { found, .. } => {
            format!("pass --model {found}, or leave --model out")
        }
        Error::EmptyData { .. } => {
            "pass --data-dir with a data set that has images (see `mnist-cnn import`)".into()
        }
        Error::Diverged { .. } => "try a lower --lr; the last good checkpoint was kept".into(),
        Error::BackendNotCompiled { feature, .. } => {
            format!("rebuild with `cargo build --release --features {feature}`")
        }
        Error::Download(_) if command == "download" => {
            "pass --mirror URL (a base URL or a local directory)".into()
        }
        _ => return None,
    };
    Some(hint)
}
