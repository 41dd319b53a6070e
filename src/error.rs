//! The library's errors: one variant per kind of failure, each carrying what a caller needs to
//! react to it (a path, an epoch, ...). Messages are one line and name no command-line flag or
//! command; the binary adds those hints (see `src/cli/hints.rs`).

use std::path::PathBuf;

/// Every failure the library reports. Each message is one line meant for a user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed; `source` is the operating system's reason. The message
    /// names the path only: printing the error's chain (`{:#}` with anyhow) adds the reason once.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file that is not a valid IDX file of the expected kind.
    #[error("{}: {reason}", path.display())]
    InvalidIdx { path: PathBuf, reason: String },
    /// One of the MNIST files is not in the data directory.
    #[error("{name} not found in {} (looked for {name}.gz, {name}, {dotted}.gz and {dotted})", dir.display())]
    MissingData {
        dir: PathBuf,
        name: &'static str,
        dotted: &'static str,
    },
    /// A path to read that is not a regular file (a folder, a FIFO, a device).
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// A data set whose split holds no images at all.
    #[error("the {split} split in {} holds no images", dir.display())]
    EmptyData { dir: PathBuf, split: &'static str },
    /// Without class names, a label far above the others implies classes that have no images.
    #[error(
        "label {label} (image {index}) in {} makes {} classes, but classes {empty} have no images; a stray label? name the classes in classes.txt to keep empty ones",
        dir.display(), label + 1
    )]
    EmptyClasses {
        dir: PathBuf,
        label: usize,
        index: usize,
        empty: String,
    },
    #[error("{0}")]
    Download(String),
    #[error("drawing {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// The directory holds no trained run (its `run.json` is missing).
    #[error("no trained model in {} (run.json is missing)", dir.display())]
    NoRun { dir: PathBuf },
    /// A file of a run or data set exists but cannot be used: unparsable, truncated, or its
    /// checksum does not match the one recorded when it was written.
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Weights that do not fit the architecture and shape the run describes.
    #[error("cannot load {} as a {architecture} model ({reason})", path.display())]
    IncompatibleModel {
        path: PathBuf,
        architecture: String,
        reason: String,
    },
    /// A model file (Keras, safetensors) that cannot be read: damaged, truncated, or not what
    /// it claims to be.
    #[error("{}: {reason}", path.display())]
    ModelFile { path: PathBuf, reason: String },
    /// A readable model file whose architecture is not one of this tool's.
    #[error("{} is not a model this tool can run: {reason}", path.display())]
    ForeignModel { path: PathBuf, reason: String },
    /// A model file of one of this tool's architectures, but not the one asked for.
    #[error("{} holds a {found} model, not a {asked}", path.display())]
    ModelArchitecture {
        path: PathBuf,
        found: &'static str,
        asked: &'static str,
    },
    /// A directory that already holds a run, where a new one would replace it.
    #[error("{} already holds a run", dir.display())]
    RunExists { dir: PathBuf },
    /// Data that the trained network was not built for.
    #[error("{0}")]
    DataMismatch(String),
    /// A run directory asked to be resumed was started with other settings or data.
    #[error(
        "the run in {} was started with other settings or data ({differences})",
        dir.display()
    )]
    ResumeMismatch { dir: PathBuf, differences: String },
    /// `train --init-from`: a run whose weights cannot start this one.
    #[error("cannot start from the run in {}: {reason}", dir.display())]
    InitMismatch { dir: PathBuf, reason: String },
    /// Another process is training into the same directory.
    #[error("another training run is writing to {} (it holds {})", dir.display(), lock.display())]
    RunLocked { dir: PathBuf, lock: PathBuf },
    /// The loss became NaN or infinite; the last good checkpoint was kept.
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {loss}")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f32,
    },
    /// burn could not serialise a model or optimizer state.
    #[error("cannot serialise the {what}: {reason}")]
    Serialize { what: &'static str, reason: String },
    /// A backend that is not compiled into this build; `backend` is its name (as
    /// `backend::BackendKind::name` gives it), `feature` the cargo feature that compiles it in.
    #[error("the {backend} backend is not compiled into this build")]
    BackendNotCompiled {
        backend: &'static str,
        feature: &'static str,
    },
    /// A backend that cannot start here: no driver, no device, or its kernels do not run.
    #[error("the {backend} backend cannot start: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },
    /// A picture drawn in memory (`plot::layers`) could not be drawn.
    #[error("drawing {what}: {reason}")]
    Picture { what: String, reason: String },
    /// The web server could not listen on its address, or stopped with an error.
    #[error("server on {address}: {reason}")]
    Serve { address: String, reason: String },
    /// An option value the library cannot work with.
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
