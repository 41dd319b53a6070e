//! This tool's temporaries: their naming, a registry of those alive so that a signal handler
//! can remove them, and the sweep of those that a killed process left behind.
//!
//! Every temporary file or directory is named `.mnist-cnn-tmp-<pid>-<random>` after the process
//! that created it. A later run removes the ones whose process is gone
//! ([`sweep_stale_temporaries`]); the binary removes its own on SIGINT and SIGTERM
//! ([`remove_temporaries`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The start of every temporary's name; the creating process's id and a `-` follow.
pub const TEMP_PREFIX: &str = ".mnist-cnn-tmp-";

/// `.mnist-cnn-tmp-<pid>-`: the prefix of the temporaries of this process.
pub fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}-", std::process::id())
}

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock cannot leave the list inconsistent: take it anyway.
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A temporary file or directory that [`remove_temporaries`] removes while this value lives.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Registration {
    pub fn new(path: &Path) -> Self {
        live().push(path.to_path_buf());
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = live();
        if let Some(index) = live.iter().position(|path| *path == self.path) {
            live.swap_remove(index);
        }
    }
}

/// Removes every temporary this process has registered and not yet finished with. Meant for
/// the handler of a terminating signal, which then ends the process.
pub fn remove_temporaries() -> usize {
    let paths = live().clone();
    paths.iter().filter(|path| remove_entry(path)).count()
}

/// The temporaries in `dir` that a process which no longer runs left behind, removed. Returns
/// their paths. Entries of other naming, and those of live processes, are never touched.
pub fn sweep_stale_temporaries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if pid == std::process::id() || is_alive(pid) {
            continue;
        }
        let path = entry.path();
        if remove_entry(&path) {
            removed.push(path);
        }
    }
    removed
}

/// The process id in the name of one of our temporaries.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    pid.parse().ok()
}

/// Whether a process with this id exists (on other systems than Unix: assumed so).
fn is_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let result = unsafe { libc::kill(pid, 0) };
        result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Removes a file, link or whole directory; whether something was removed.
fn remove_entry(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path).is_ok(),
        Ok(_) => std::fs::remove_file(path).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_owner() {
        assert_eq!(owner_pid(".mnist-cnn-tmp-123-abc"), Some(123));
        assert_eq!(owner_pid(".mnist-cnn-tmp-x-abc"), None);
        assert_eq!(owner_pid(".tmp-abc"), None);
        assert_eq!(
            owner_pid(&format!("{}zz", temp_prefix())),
            Some(std::process::id())
        );
    }

    #[test]
    fn sweeps_only_stale_temporaries_of_our_naming() {
        let dir = tempfile::tempdir().unwrap();
        // A process id that cannot exist (above the kernel's maximum) stands for a dead one.
        let dead = format!("{TEMP_PREFIX}2147483000-x");
        let mine = format!("{}y", temp_prefix());
        std::fs::write(dir.path().join(&dead), b"partial").unwrap();
        std::fs::create_dir(dir.path().join(format!("{dead}dir"))).unwrap();
        std::fs::write(dir.path().join(format!("{dead}dir/inner")), b"x").unwrap();
        std::fs::write(dir.path().join(&mine), b"in use").unwrap();
        std::fs::write(dir.path().join(".tmp-other"), b"not ours").unwrap();
        let removed = sweep_stale_temporaries(dir.path());
        assert_eq!(removed.len(), 2, "{removed:?}");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![mine, ".tmp-other".to_string()]);
    }

    #[test]
    fn registrations_last_as_long_as_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let (file, folder) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&file, b"x").unwrap();
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("c"), b"x").unwrap();
        let registered = |path: &Path| live().contains(&path.to_path_buf());
        {
            let _registration = Registration::new(&file);
            assert!(registered(&file));
        }
        assert!(!registered(&file));
        // (remove_temporaries itself would also remove other tests' temporaries.)
        assert!(remove_entry(&file) && remove_entry(&folder));
        assert!(!file.exists() && !folder.exists());
        assert!(!remove_entry(&file));
    }
}
