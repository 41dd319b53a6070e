//! File writing that never leaves a half-written file behind: single files
//! ([`write_atomically`]), whole directories ([`replace_dir_atomically`]), and this tool's
//! temporaries ([`temp`]: naming, cleanup on signals, sweeping stale ones). Also opening files
//! for reading that refuses anything but a regular file ([`open_regular`]).

mod swap;
pub mod temp;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use swap::{DirFile, replace_dir_atomically};
pub use temp::{remove_temporaries, sweep_stale_temporaries};

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames it into
/// place, so readers see either the old file or the complete new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomically`], for writers that stream their output.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut temp = TempFile::new_in(dir)?;
    write(temp.as_file_mut()).map_err(|e| Error::io(path, e))?;
    temp.persist(path)
}

/// A temporary file of this tool's naming in the directory of its target, removed when dropped
/// or when the process is ended by SIGINT or SIGTERM, unless it was persisted.
#[derive(Debug)]
pub struct TempFile {
    file: tempfile::NamedTempFile,
    _registration: temp::Registration,
}

impl TempFile {
    pub fn new_in(dir: &Path) -> Result<Self> {
        let file = temp_file_builder()
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let registration = temp::Registration::new(file.path());
        Ok(Self {
            file,
            _registration: registration,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn as_file(&self) -> &std::fs::File {
        self.file.as_file()
    }

    pub fn as_file_mut(&mut self) -> &mut std::fs::File {
        self.file.as_file_mut()
    }

    /// Flushes the file to disk and renames it to `path` (in the same directory).
    pub fn persist(self, path: &Path) -> Result<()> {
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(path, e))?;
        self.file
            .persist(path)
            .map_err(|e| Error::io(path, e.error))?;
        sync_dir(parent_dir(path));
        Ok(())
    }
}

/// Makes renames and creations in `dir` durable; without this a power cut could still lose
/// them. (Not possible, and not needed, everywhere: errors are ignored.)
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Opens `path` for reading if it is a regular file (or a link to one). A FIFO, device or
/// directory is refused without blocking: opening a FIFO waits for a writer, forever.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking only for the open itself; reads from a regular file never block.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    if !metadata.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// The absolute form of `path` for creating things beside it, without resolving its last
/// component (which may not exist yet).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json_atomically<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Serialize {
        what: "JSON result",
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

/// Reads and parses a JSON file, naming the file in any error.
/// The JSON files this tool writes (a run's manifest, its history) stay far below this; a
/// larger file is refused before it is read.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_JSON_BYTES {
        return Err(Error::corrupt(
            path,
            format!(
                "{size} bytes, more than the {} MiB a file of this tool can hold",
                MAX_JSON_BYTES >> 20
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(path, format!("not the JSON this tool wrote ({e})")))
}

/// A hidden temporary file of this tool's naming (see [`temp`]), readable like any file the
/// user creates (tempfile defaults to 0600).
pub fn temp_file_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(PREFIX.get_or_init(temp::temp_prefix).as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    builder
}

static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
