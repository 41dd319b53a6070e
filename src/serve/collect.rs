//! The collect folder behind `POST /api/collect`: a drawing is saved as `DIR/<class folder>/drawing-<time>-<n>.png`, the
//! layout `import` reads (the folder is the class's name, percent-encoded where a folder name
//! cannot hold it: [`crate::data::class_folder`]), within a quota of files and bytes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use axum::http::StatusCode;

use crate::error::Error;

use super::Limits;
use super::error::ApiError;

/// The collect folder, and what it holds against its quota.
pub(crate) struct CollectFolder {
    dir: PathBuf,
    max_files: u64,
    max_bytes: u64,
    used: Mutex<Usage>,
    /// Drawings saved since the server started, to name them.
    saved: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    files: u64,
    bytes: u64,
}

impl CollectFolder {
    /// The folder at `dir`, counting the files already in its class folders.
    pub fn open(dir: &Path, limits: &Limits) -> CollectFolder {
        CollectFolder {
            dir: dir.to_path_buf(),
            max_files: limits.collect_max_files,
            max_bytes: limits.collect_max_bytes,
            used: Mutex::new(usage(dir)),
            saved: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` more in one more file against the quota, or says why they do not fit.
    fn reserve(&self, bytes: u64) -> Result<(), ApiError> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if used.files + 1 > self.max_files || used.bytes + bytes > self.max_bytes {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "the collect folder {} is full: it holds {} files of {} bytes, and this server \
                     keeps it within {} files and {} bytes",
                    self.dir.display(),
                    used.files,
                    used.bytes,
                    self.max_files,
                    self.max_bytes
                ),
            ));
        }
        used.files += 1;
        used.bytes += bytes;
        Ok(())
    }

    fn release(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.files = used.files.saturating_sub(1);
        used.bytes = used.bytes.saturating_sub(bytes);
    }

    /// Writes `png` as a new drawing of the class folder `folder`; returns its path in the
    /// collect folder.
    pub(super) fn save(&self, folder: &str, png: &[u8]) -> Result<String, ApiError> {
        let bytes = png.len() as u64;
        self.reserve(bytes)?;
        let count = self.saved.fetch_add(1, Ordering::SeqCst);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let file = format!("drawing-{millis}-{count}.png");
        let path = self.dir.join(folder).join(&file);
        if let Err(error) = crate::fsutil::write_atomically(&path, png) {
            self.release(bytes);
            return Err(save_error(&error));
        }
        Ok(format!("{folder}/{file}"))
    }
}

/// Files and bytes in the class folders of `dir` (nothing if it does not exist yet).
fn usage(dir: &Path) -> Usage {
    let mut used = Usage::default();
    let entries = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| Some((entry.path(), entry.metadata().ok()?)))
    };
    for (class, metadata) in entries(dir) {
        if metadata.is_dir() {
            for (_, metadata) in entries(&class) {
                if metadata.is_file() {
                    used.files += 1;
                    used.bytes += metadata.len();
                }
            }
        }
    }
    used
}

/// A failed write, with the system's reason: 507 when the disk or quota is full, else 500.
fn save_error(error: &Error) -> ApiError {
    let mut message = format!("cannot save the drawing: {error}");
    let mut full = false;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            full |= matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        }
        source = cause.source();
    }
    let status = if full {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    ApiError::new(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_message(error: ApiError) -> (StatusCode, String) {
        let response = axum::response::IntoResponse::into_response(error);
        let status = response.status();
        let body = futures_body(response);
        (status, body)
    }

    fn futures_body(response: axum::response::Response) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["error"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_full_disk_is_507_with_the_systems_reason() {
        let error = Error::io(
            "/collect/7/drawing.png",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let (status, message) = status_and_message(save_error(&error));
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(message.contains("/collect/7/drawing.png"), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
        let denied = Error::io(
            "/collect/7/drawing.png",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        let (status, message) = status_and_message(save_error(&denied));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(message.contains("Permission denied"), "{message}");
    }

    #[test]
    fn the_quota_counts_what_is_there_and_what_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("1/old.png"), [0u8; 100]).unwrap();
        let limits = Limits {
            collect_max_files: 3,
            collect_max_bytes: 250,
            ..Limits::default()
        };
        let folder = CollectFolder::open(dir.path(), &limits);
        folder.save("2", &[0u8; 100]).unwrap();
        let (status, message) = status_and_message(folder.save("2", &[0u8; 51]).unwrap_err());
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(message.contains("full"), "{message}");
        folder.save("x%5Cy", &[0u8; 50]).unwrap();
        assert!(folder.save("2", &[0u8; 1]).is_err(), "three files at most");
        assert_eq!(usage(dir.path()).files, 3);
        assert_eq!(usage(dir.path()).bytes, 250);
        assert_eq!(
            std::fs::read_dir(dir.path().join("x%5Cy")).unwrap().count(),
            1
        );
    }
}
