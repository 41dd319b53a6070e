//! Replacing a whole directory of files as one step: every file is written into a staging
//! directory beside the target, flushed to disk, and the staging directory is then swapped with
//! the target. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`, so at every instant the
//! target is either the old directory or the complete new one; elsewhere (or on file systems
//! without that call) it is two renames, and a kill between them leaves the old directory
//! beside the target as `.mnist-cnn-old-<pid>-<random>`.

use std::path::{Path, PathBuf};

use super::temp::{self, Registration};
use super::{absolute, parent_dir, sync_dir};
use crate::error::{Error, Result};

/// One file of a directory written by [`replace_dir_atomically`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFile {
    /// A plain file name (no directory part).
    pub name: String,
    pub bytes: Vec<u8>,
}

impl DirFile {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }
}

/// Makes `target` a directory holding `files`, atomically: a failure or a kill at any point
/// leaves the old `target` (or none, if there was none) untouched. Entries of the old directory
/// that `replaces` names are dropped; all other files are kept (hard-linked into the new
/// directory), and so are entries that appear in the old directory while the new one is
/// staged (moved into the new one right after the swap; only a kill in that instant leaves
/// them behind with the old directory). A subdirectory of the old one is refused before
/// anything is written, since keeping it would need a copy that cannot be atomic.
pub fn replace_dir_atomically(
    target: &Path,
    files: &[DirFile],
    replaces: &dyn Fn(&str) -> bool,
) -> Result<()> {
    replace_dir_with(target, files, replaces, &mut || {})
}

/// [`replace_dir_atomically`], calling `while_staging` after the old directory's entries are
/// listed and before the swap (the tests create files there).
fn replace_dir_with(
    target: &Path,
    files: &[DirFile],
    replaces: &dyn Fn(&str) -> bool,
    while_staging: &mut dyn FnMut(),
) -> Result<()> {
    for file in files {
        if file.name.is_empty()
            || file.name.contains(['/', '\\'])
            || file.name == "."
            || file.name == ".."
        {
            return Err(Error::InvalidArgument(format!(
                "{:?} is not a plain file name",
                file.name
            )));
        }
    }
    // A link to a directory: replace the directory it points to, and keep the link.
    let target = match std::fs::symlink_metadata(target) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            std::fs::canonicalize(target).map_err(|e| Error::io(target, e))?
        }
        _ => absolute(target)?,
    };
    let parent = parent_dir(&target).to_path_buf();
    if target.file_name().is_none() || parent == target {
        return Err(Error::InvalidArgument(format!(
            "cannot replace {}: it has no parent directory",
            target.display()
        )));
    }
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    temp::sweep_stale_temporaries(&parent);
    let kept = kept_entries(&target, files, replaces)?;

    let stage = tempfile::Builder::new()
        .prefix(&temp::temp_prefix())
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?
        .keep();
    let registration = Registration::new(&stage);
    while_staging();
    let result = fill_and_swap(&stage, &target, files, &kept);
    // After a swap the staging path holds the old directory; on failure, the partial new one.
    let carried = match result {
        Ok(()) => carry_over(&stage, &target, files, replaces),
        Err(_) => Ok(()),
    };
    match carried {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&stage);
        }
        // What could not be moved stays, with the old directory, under a name no sweep removes.
        Err(_) => {
            let _ = std::fs::rename(&stage, old_name(&target, &stage));
        }
    }
    drop(registration);
    result.and(carried)
}

/// Moves into the new directory `new` the entries that the old one (`old`, after the swap)
/// gained or changed after its entries were listed: files created, or replaced by rename,
/// while the new one was staged. Entries the new data set writes or replaces stay behind.
fn carry_over(
    old: &Path,
    new: &Path,
    files: &[DirFile],
    replaces: &dyn Fn(&str) -> bool,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(old) {
        Ok(entries) => entries,
        // There was no old directory: the new one was renamed into place.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(old, e)),
    };
    let mut moved = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(old, e))?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if replaces(&text)
            || files.iter().any(|file| *file.name == *text)
            || text.starts_with(temp::TEMP_PREFIX)
        {
            continue;
        }
        let (from, to) = (entry.path(), new.join(&name));
        let same_file = match (
            std::fs::symlink_metadata(&from),
            std::fs::symlink_metadata(&to),
        ) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        if !same_file {
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
            moved = true;
        }
    }
    if moved {
        sync_dir(new);
    }
    Ok(())
}

/// `.mnist-cnn-old-<pid>-<stage's name>` beside `target`: a name no sweep removes.
fn old_name(target: &Path, stage: &Path) -> PathBuf {
    parent_dir(target).join(format!(
        ".mnist-cnn-old-{}-{}",
        std::process::id(),
        stage
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    ))
}

/// Names of the entries of the old `target` to carry into the new one.
fn kept_entries(
    target: &Path,
    files: &[DirFile],
    replaces: &dyn Fn(&str) -> bool,
) -> Result<Vec<std::ffi::OsString>> {
    let entries = match std::fs::read_dir(target) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(target, e)),
    };
    let mut kept = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(target, e))?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let path = entry.path();
        let is_dir = entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir();
        if is_dir {
            return Err(Error::InvalidArgument(format!(
                "{} is a folder; only files can be kept when the folder around it is replaced, so move it elsewhere",
                path.display()
            )));
        }
        let replaced = replaces(&text) || files.iter().any(|file| *file.name == *text);
        if !replaced && !text.starts_with(temp::TEMP_PREFIX) {
            kept.push(name);
        }
    }
    Ok(kept)
}

fn fill_and_swap(
    stage: &Path,
    target: &Path,
    files: &[DirFile],
    kept: &[std::ffi::OsString],
) -> Result<()> {
    use std::io::Write;
    for file in files {
        let path = stage.join(&file.name);
        let mut out = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        out.write_all(&file.bytes)
            .and_then(|()| out.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        fault_point(&path)?;
    }
    for name in kept {
        let (from, to) = (target.join(name), stage.join(name));
        std::fs::hard_link(&from, &to).map_err(|e| Error::io(&from, e))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(target).map_or(0o755, |m| m.permissions().mode() & 0o7777);
        std::fs::set_permissions(stage, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(stage, e))?;
    }
    sync_dir(stage);
    fault_point(target)?;
    swap(stage, target)?;
    sync_dir(parent_dir(target));
    // The new directory is in place: only a crash can still be injected here.
    let _ = fault_point(target);
    Ok(())
}

/// Puts `stage` at `target`; afterwards `stage` holds the old target, if there was one.
fn swap(stage: &Path, target: &Path) -> Result<()> {
    if std::fs::symlink_metadata(target).is_err() {
        return std::fs::rename(stage, target).map_err(|e| Error::io(target, e));
    }
    if !std::fs::metadata(target).is_ok_and(|m| m.is_dir()) {
        return Err(Error::io(
            target,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    match exchange(stage, target) {
        Ok(()) => Ok(()),
        Err(e) if exchange_unsupported(&e) => swap_by_two_renames(stage, target),
        Err(e) => Err(Error::io(target, e)),
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let to_c = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (to_c(a)?, to_c(b)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

fn exchange_unsupported(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return true;
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

/// The fallback: the old target moves aside under a name no sweep removes, then the new one
/// takes its place, then the old one moves to `stage` for removal.
fn swap_by_two_renames(stage: &Path, target: &Path) -> Result<()> {
    let old = old_name(target, stage);
    std::fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
    if let Err(e) = std::fs::rename(stage, target) {
        let _ = std::fs::rename(&old, target);
        return Err(Error::io(target, e));
    }
    std::fs::rename(&old, stage).map_err(|e| Error::io(&old, e))
}

/// Test hook: with `MNIST_CNN_DIR_FAULT=crash:N` the process aborts (as under `kill -9`) at the
/// N-th step of a directory replacement, with `fail:N` that step fails with an I/O error. The
/// steps are: each file written in the staging directory, then just before the swap, then
/// just after it (where only a crash is injected).
fn fault_point(path: &Path) -> Result<()> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FAULT: OnceLock<Option<(bool, usize)>> = OnceLock::new();
    static STEPS: AtomicUsize = AtomicUsize::new(0);
    let fault = FAULT.get_or_init(|| {
        let value = std::env::var("MNIST_CNN_DIR_FAULT").ok()?;
        let (kind, step) = value.split_once(':')?;
        Some((kind == "crash", step.parse().ok()?))
    });
    let Some((crash, at)) = *fault else {
        return Ok(());
    };
    if STEPS.fetch_add(1, Ordering::SeqCst) + 1 != at {
        return Ok(());
    }
    if crash {
        std::process::abort();
    }
    Err(Error::io(
        path,
        std::io::Error::other("injected failure (MNIST_CNN_DIR_FAULT)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_replaces_and_keeps_other_files() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("set");
        let first = [
            DirFile::new("a", b"1".to_vec()),
            DirFile::new("b", b"2".to_vec()),
        ];
        replace_dir_atomically(&target, &first, &|_| false).unwrap();
        assert_eq!(names(&target), ["a", "b"]);
        std::fs::write(target.join("notes"), b"mine").unwrap();
        std::fs::write(target.join("old-only"), b"dropped").unwrap();
        let second = [DirFile::new("a", b"3".to_vec())];
        replace_dir_atomically(&target, &second, &|name| name == "old-only" || name == "b")
            .unwrap();
        assert_eq!(names(&target), ["a", "notes"]);
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"3");
        assert_eq!(std::fs::read(target.join("notes")).unwrap(), b"mine");
        assert_eq!(names(root.path()), ["set"], "no staging directory left");
    }

    /// Files that appear in the old directory while the new one is staged (a new one, one
    /// replaced by rename, one in the way of the new data set) are not lost with the old
    /// directory: the first two are moved into the new one, the last is replaced as promised.
    #[test]
    fn files_created_while_staging_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("set");
        replace_dir_atomically(&target, &[DirFile::new("a", b"1".to_vec())], &|_| false).unwrap();
        std::fs::write(target.join("notes"), b"old notes").unwrap();
        let second = [DirFile::new("a", b"2".to_vec())];
        replace_dir_with(&target, &second, &|name| name == "dropped", &mut || {
            std::fs::write(target.join("late"), b"made while staging").unwrap();
            std::fs::write(target.join("notes.new"), b"new notes").unwrap();
            std::fs::rename(target.join("notes.new"), target.join("notes")).unwrap();
            std::fs::write(target.join("dropped"), b"replaced").unwrap();
            std::fs::write(target.join("a"), b"in the way").unwrap();
        })
        .unwrap();
        assert_eq!(names(&target), ["a", "late", "notes"]);
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"2");
        assert_eq!(
            std::fs::read(target.join("late")).unwrap(),
            b"made while staging"
        );
        assert_eq!(std::fs::read(target.join("notes")).unwrap(), b"new notes");
        assert_eq!(names(root.path()), ["set"], "no staging directory left");
    }

    #[test]
    fn a_subfolder_or_a_bad_name_is_refused_before_writing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("set");
        std::fs::create_dir_all(target.join("sub")).unwrap();
        std::fs::write(target.join("a"), b"old").unwrap();
        let error = replace_dir_atomically(&target, &[DirFile::new("a", vec![])], &|_| false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sub is a folder"), "{error}");
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"old");
        let error = replace_dir_atomically(&target, &[DirFile::new("../x", vec![])], &|_| false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a plain file name"), "{error}");
        assert_eq!(names(root.path()), ["set"]);
    }

    #[test]
    fn a_link_to_a_directory_stays_a_link() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        replace_dir_atomically(&link, &[DirFile::new("a", b"1".to_vec())], &|_| false).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(real.join("a")).unwrap(), b"1");
    }

    #[test]
    fn the_fallback_swap_gives_the_same_result() {
        let root = tempfile::tempdir().unwrap();
        let (stage, target) = (root.path().join("stage"), root.path().join("target"));
        std::fs::create_dir(&stage).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(stage.join("new"), b"").unwrap();
        std::fs::write(target.join("old"), b"").unwrap();
        swap_by_two_renames(&stage, &target).unwrap();
        assert_eq!(names(&target), ["new"]);
        assert_eq!(names(&stage), ["old"]);
        assert_eq!(names(root.path()), ["stage", "target"]);
    }
}
