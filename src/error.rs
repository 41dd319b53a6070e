use std::path::PathBuf;

/// Every failure the library reports. Each message is one line meant for a user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    InvalidIdx { path: PathBuf, reason: String },
    #[error("{0}")]
    Download(String),
    #[error("drawing {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// A backend that is not compiled in or cannot start (no driver, no device).
    #[error("{0}")]
    Backend(String),
    #[error("{}: {reason}", path.display())]
    Json { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
