//! `runs/latest`: which run is the newest. A symbolic link to the run's folder where the
//! system allows one, else a small file holding the run's name; replaced atomically (made
//! beside it under a temporary name, then renamed over it), so a reader finds the old run or
//! the new one.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{LATEST, is_plain_name};
use crate::error::{Error, Result};
use crate::fsutil::{temp, write_atomically};
use crate::run::{RUN_FILE, RunInfo, RunLock};

/// The longest pointer file that is read.
const MAX_POINTER_BYTES: u64 = 4096;

/// The name of the run that `root/latest` points at, by a link or a pointer file; `None` when
/// there is no pointer (nothing, or a real folder left by an older mnist-cnn).
pub fn latest_name(root: &Path) -> Option<String> {
    let path = root.join(LATEST);
    let metadata = std::fs::symlink_metadata(&path).ok()?;
    let name = if metadata.file_type().is_symlink() {
        let target = std::fs::read_link(&path).ok()?;
        target.to_str()?.trim_end_matches('/').to_string()
    } else if metadata.is_file() {
        read_pointer(&path)?
    } else {
        return None;
    };
    is_plain_name(&name).then_some(name)
}

fn read_pointer(path: &Path) -> Option<String> {
    let mut text = String::new();
    crate::fsutil::open_regular(path)
        .ok()?
        .take(MAX_POINTER_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_string())
}

/// Resolves a pointer file named `latest` to the folder it names; other paths stay as they
/// are (a symbolic link is followed by the system itself).
pub(crate) fn resolve_pointer(path: &Path) -> Option<PathBuf> {
    if path.file_name()? != LATEST {
        return None;
    }
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let name = read_pointer(path).filter(|name| is_plain_name(name))?;
    Some(crate::fsutil::parent_dir(path).join(name))
}

/// Points `root/latest` at the run folder `root/name`. An older mnist-cnn's real
/// `runs/latest` folder is first moved to a run name of its own (returned), unless a training
/// run holds it.
pub fn point_latest(root: &Path, name: &str) -> Result<Option<PathBuf>> {
    point_latest_as(root, name, true)
}

/// As [`point_latest`]; with `links` false, always as a pointer file.
fn point_latest_as(root: &Path, name: &str, links: bool) -> Result<Option<PathBuf>> {
    if !is_plain_name(name) {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a run folder's name"
        )));
    }
    let path = root.join(LATEST);
    let moved = match std::fs::symlink_metadata(&path) {
        Ok(metadata) if metadata.is_dir() => Some(move_legacy_folder(root)?),
        _ => None,
    };
    let staged = root.join(format!("{}{LATEST}", temp::temp_prefix()));
    let _registration = temp::Registration::new(&staged);
    let _ = std::fs::remove_file(&staged);
    if links && make_symlink(name, &staged).is_ok() {
        std::fs::rename(&staged, &path).map_err(|e| Error::io(&path, e))?;
        crate::fsutil::sync_dir(root);
    } else {
        write_atomically(&path, format!("{name}\n").as_bytes())?;
    }
    Ok(moved)
}

#[cfg(unix)]
fn make_symlink(name: &str, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(name, at)
}

#[cfg(windows)]
fn make_symlink(name: &str, at: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(name, at)
}

#[cfg(not(any(unix, windows)))]
fn make_symlink(_name: &str, _at: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Moves the folder `root/latest` (where mnist-cnn trained by default before runs had folders
/// of their own) to a name of the time it started, so that `latest` can point at runs.
fn move_legacy_folder(root: &Path) -> Result<PathBuf> {
    let legacy = root.join(LATEST);
    let lock = RunLock::acquire(&legacy)?;
    let started = RunInfo::load(&legacy)
        .ok()
        .and_then(|run| run.started_at)
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0)))
        .or_else(|| {
            std::fs::metadata(legacy.join(RUN_FILE))
                .and_then(|m| m.modified())
                .ok()
        })
        .unwrap_or_else(std::time::SystemTime::now);
    let base = super::run_name(started, None);
    for attempt in 1.. {
        let name = super::numbered(&base, attempt);
        let target = root.join(&name);
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        std::fs::rename(&legacy, &target).map_err(|e| Error::io(&legacy, e))?;
        drop(lock);
        return Ok(target);
    }
    unreachable!("some number is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_a_link_or_a_pointer_file_replaced_atomically() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for name in ["a", "b"] {
            std::fs::create_dir(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("mark"), name).unwrap();
        }
        assert_eq!(latest_name(root), None);
        point_latest(root, "a").unwrap();
        assert_eq!(latest_name(root).as_deref(), Some("a"));
        #[cfg(unix)]
        assert!(
            std::fs::symlink_metadata(root.join(LATEST))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(root.join("latest/mark")).unwrap(), b"a");
        // Where links cannot be made: a file naming the run, resolved by this tool.
        point_latest_as(root, "b", false).unwrap();
        assert_eq!(std::fs::read_to_string(root.join(LATEST)).unwrap(), "b\n");
        assert_eq!(latest_name(root).as_deref(), Some("b"));
        assert_eq!(resolve_pointer(&root.join(LATEST)), Some(root.join("b")));
        point_latest(root, "a").unwrap();
        assert_eq!(latest_name(root).as_deref(), Some("a"));
        assert_eq!(
            resolve_pointer(&root.join(LATEST)),
            None,
            "a link needs no help"
        );
        let leftovers: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A pointer to something that is not a plain name is no pointer.
        std::fs::remove_file(root.join(LATEST)).unwrap();
        std::fs::write(root.join(LATEST), "../../etc\n").unwrap();
        assert_eq!(latest_name(root), None);
        assert_eq!(resolve_pointer(&root.join(LATEST)), None);
        assert!(point_latest(root, "../x").is_err());
    }

    #[test]
    fn an_older_real_latest_folder_is_moved_aside_not_lost() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("latest")).unwrap();
        std::fs::write(root.join("latest/run.json"), b"{}").unwrap();
        std::fs::create_dir(root.join("new")).unwrap();
        let moved = point_latest(root, "new").unwrap().expect("moved");
        assert_eq!(std::fs::read(moved.join("run.json")).unwrap(), b"{}");
        assert_eq!(latest_name(root).as_deref(), Some("new"));
        // A training run still writing it keeps it where it is.
        std::fs::remove_file(root.join(LATEST)).unwrap();
        std::fs::create_dir(root.join(LATEST)).unwrap();
        let _held = RunLock::acquire(&root.join(LATEST)).unwrap();
        let error = point_latest(root, "new").unwrap_err();
        assert!(matches!(error, Error::RunLocked { .. }), "{error}");
        assert!(root.join("latest").is_dir());
    }
}
