//! The runs folder: one folder per training run, `runs/<UTC start>[-<name>]`, and
//! `runs/latest` pointing at the newest ([`latest`]). Naming new runs, finding a run by its
//! name, refusing to train over a run by accident, listing the runs ([`list`]) and removing
//! one.

mod latest;
mod list;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use latest::{latest_name, point_latest};
pub use list::{RunEntry, RunSummary, compare_chart, list_runs};

use super::logs::{CSV_FILE, is_events_file};
use super::{ACCURACY_PLOT, HISTORY_FILE, LOSS_PLOT, MODEL_FILE, RUN_FILE, RunLock};
use crate::error::{Error, Result};
use crate::fsutil::temp;

/// Where `train` puts new runs, relative to the working directory.
pub const RUNS_DIR: &str = "runs";
/// The name of the pointer to the newest run, inside the runs folder.
pub const LATEST: &str = "latest";
/// The longest `--name` of a run.
pub const MAX_LABEL: usize = 64;

/// Whether `name` can be a run folder's name: one path component of letters, digits, `.`,
/// `_` and `-`, not starting with `.` or `-`, at most 255 bytes.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Refuses a `--name` that cannot end a folder's name: see [`is_plain_name`].
pub fn check_label(label: &str) -> Result<()> {
    if label.len() > MAX_LABEL || !is_plain_name(label) {
        return Err(Error::InvalidArgument(format!(
            "a run's name is 1 to {MAX_LABEL} letters, digits, '.', '_' or '-', not starting with '.' or '-'; got {label:?}"
        )));
    }
    Ok(())
}

/// `20250601-123005` (the UTC time, sortable as text), with `-label` when given.
pub fn run_name(time: SystemTime, label: Option<&str>) -> String {
    let stamp = chrono::DateTime::<chrono::Utc>::from(time).format("%Y%m%d-%H%M%S");
    match label {
        Some(label) => format!("{stamp}-{label}"),
        None => stamp.to_string(),
    }
}

/// `base`, then `base-2`, `base-3`, ... for the attempts after the first.
fn numbered(base: &str, attempt: usize) -> String {
    if attempt == 1 {
        base.to_string()
    } else {
        format!("{base}-{attempt}")
    }
}

/// Creates a new run folder in `root` named after the time now (and `label`); a second run
/// started in the same second gets `-2` after its name.
pub fn create_run_dir(root: &Path, label: Option<&str>) -> Result<PathBuf> {
    if let Some(label) = label {
        check_label(label)?;
    }
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let base = run_name(SystemTime::now(), label);
    for attempt in 1..1000 {
        let dir = root.join(numbered(&base, attempt));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(Error::io(
        root.join(base),
        std::io::ErrorKind::AlreadyExists.into(),
    ))
}

/// The run folder that a `--model-dir` value names, as [`watched_run_dir`] finds it, with a
/// link in its last component (`runs/latest`) replaced by the folder it points at now: a
/// command that reads and writes a run keeps to that one run while `latest` moves on.
pub fn find_run_dir(path: &Path) -> PathBuf {
    pin(&watched_run_dir(path))
}

/// The run folder that a `--model-dir` value names: a folder as it is (a link such as
/// `runs/latest` is left to the system to follow, so a server on it follows new runs), a
/// `latest` pointer file resolved, and a bare run name that is no folder here looked up in
/// [`RUNS_DIR`]. Anything else stays as it is, for the reader to report.
pub fn watched_run_dir(path: &Path) -> PathBuf {
    find_in(Path::new(RUNS_DIR), path)
}

/// As [`watched_run_dir`], with bare names looked up in `root`.
pub fn find_in(root: &Path, path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    if let Some(target) = latest::resolve_pointer(path) {
        return target;
    }
    let bare = path.to_str().is_some_and(is_plain_name);
    if bare && std::fs::symlink_metadata(path).is_err() {
        let candidate = root.join(path);
        if candidate.is_dir() {
            return candidate;
        }
        if let Some(target) = latest::resolve_pointer(&candidate) {
            return target;
        }
    }
    path.to_path_buf()
}

/// `path` with a symbolic link in its last component replaced by its target.
pub fn pin(path: &Path) -> PathBuf {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match std::fs::read_link(path) {
        Ok(target) if is_link && target.is_relative() => {
            crate::fsutil::parent_dir(path).join(target)
        }
        Ok(target) if is_link => target,
        _ => path.to_path_buf(),
    }
}

/// Where `train` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTarget {
    pub dir: PathBuf,
    /// The folder was made for this run: a new one named after the time.
    pub created: bool,
    /// A run that was there was removed first (with `overwrite`).
    pub replaced: bool,
}

/// The run folder of a `train`: `out` when given; without it a new folder in [`RUNS_DIR`]
/// named after the time and `label`, or, to resume, the run that `latest` points at. A run
/// already in `out` is refused unless it is resumed or `overwrite` clears it ([`clear_run`]).
pub fn train_target(
    out: Option<&Path>,
    label: Option<&str>,
    resume: bool,
    overwrite: bool,
) -> Result<TrainTarget> {
    let target = |dir: PathBuf, created, replaced| TrainTarget {
        dir,
        created,
        replaced,
    };
    match out {
        None if resume => {
            let latest = Path::new(RUNS_DIR).join(LATEST);
            let dir = find_run_dir(&latest);
            if !dir.join(RUN_FILE).is_file() {
                return Err(Error::NoRun { dir: latest });
            }
            Ok(target(dir, false, false))
        }
        None => Ok(target(
            create_run_dir(Path::new(RUNS_DIR), label)?,
            true,
            false,
        )),
        Some(out) if resume => Ok(target(find_run_dir(out), false, false)),
        Some(out) => {
            let dir = pin(out);
            match check_new_out(&dir) {
                Err(Error::RunExists { .. }) if overwrite => {
                    clear_run(&dir)?;
                    Ok(target(dir, false, true))
                }
                Err(error) => Err(error),
                Ok(()) => Ok(target(dir, false, false)),
            }
        }
    }
}

/// Points `latest` at the run in `dir` when `dir` is a folder of [`RUNS_DIR`]; returns where
/// an older mnist-cnn's real `runs/latest` folder was moved, if it was.
pub fn mark_latest(dir: &Path) -> Result<Option<PathBuf>> {
    let (Ok(dir), Ok(root)) = (std::fs::canonicalize(dir), std::fs::canonicalize(RUNS_DIR)) else {
        return Ok(None);
    };
    match (dir.parent(), dir.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) if parent == root && name != LATEST => {
            point_latest(Path::new(RUNS_DIR), name)
        }
        _ => Ok(None),
    }
}

/// Removes a folder made for a run that ended before committing an epoch (it holds no
/// `run.json`): nothing in it is of use.
pub fn discard_unstarted(dir: &Path) {
    if std::fs::symlink_metadata(dir.join(RUN_FILE)).is_err() && !is_locked(dir) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Whether a training process holds the run folder's lock now.
pub fn is_locked(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(super::checkpoint::LOCK_FILE)) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Refuses to start a new run in `dir` when it holds a committed run (or one being trained):
/// nothing is discarded unless asked for ([`clear_run`]).
pub fn check_new_out(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir.join(RUN_FILE)).is_err() {
        return Ok(());
    }
    if is_locked(dir) {
        return Err(Error::RunLocked {
            dir: dir.to_path_buf(),
            lock: dir.join(super::checkpoint::LOCK_FILE),
        });
    }
    Err(Error::RunExists {
        dir: dir.to_path_buf(),
    })
}

/// What this tool writes into a run folder, apart from the checkpoint files and event files:
/// the derived files, `evaluate`'s reports and early stopping's best weights.
const RUN_FILES: [&str; 8] = [
    HISTORY_FILE,
    MODEL_FILE,
    ACCURACY_PLOT,
    LOSS_PLOT,
    CSV_FILE,
    crate::evaluate::METRICS_FILE,
    crate::evaluate::CONFUSION_PLOT,
    crate::evaluate::MISCLASSIFIED_PLOT,
];

/// Removes the run in `dir` so that a new one can start there: its manifest first (from then
/// on the folder holds no run), then every file of a run that this tool writes. Other files,
/// and folders such as `inspect`'s, stay. Fails while a training run holds the folder.
pub fn clear_run(dir: &Path) -> Result<()> {
    let _lock = RunLock::acquire(dir)?;
    remove_if_present(&dir.join(RUN_FILE))?;
    for name in RUN_FILES {
        remove_if_present(&dir.join(name))?;
    }
    // The checkpoints' and early stopping's weights, whatever their epoch.
    super::checkpoint::remove_unreferenced(dir, &[])?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(is_events_file) {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Removes the run folder `dir` as a whole: refused while a training run holds it, and for a
/// folder that holds no run (no `run.json` and no lock file). The folder is first renamed to
/// one of this tool's temporaries, so that a kill leaves the whole run or nothing that looks
/// like one (a later listing sweeps it). Where `latest` pointed at it, it then points at the
/// newest run left, or is removed.
pub fn remove_run(dir: &Path) -> Result<()> {
    let metadata = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let is_run = metadata.is_dir()
        && (dir.join(RUN_FILE).exists() || dir.join(super::checkpoint::LOCK_FILE).exists());
    if !is_run || name == LATEST || !is_plain_name(name) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a run folder (it has no {RUN_FILE})",
            dir.display()
        )));
    }
    let lock = RunLock::acquire(dir)?;
    let root = crate::fsutil::parent_dir(dir).to_path_buf();
    let doomed = root.join(format!("{}removed-{name}", temp::temp_prefix()));
    let _registration = temp::Registration::new(&doomed);
    std::fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
    crate::fsutil::sync_dir(&root);
    drop(lock);
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
    if latest_name(&root).as_deref() == Some(name) {
        match list_runs(&root)
            .iter()
            .find(|entry| entry.summary.is_some())
        {
            Some(newest) => {
                point_latest(&root, &newest.name)?;
            }
            None => remove_if_present(&root.join(LATEST))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_sort_by_time_and_take_a_label() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_748_781_005);
        assert_eq!(run_name(time, None), "20250601-123005");
        assert_eq!(run_name(time, Some("wide")), "20250601-123005-wide");
        assert!(check_label("lr-3e-4_v2").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_run_folders_never_collide() {
        let root = tempfile::tempdir().unwrap();
        let first = create_run_dir(root.path(), Some("a")).unwrap();
        let second = create_run_dir(root.path(), Some("a")).unwrap();
        assert_ne!(first, second);
        assert!(first.is_dir() && second.is_dir());
        assert!(create_run_dir(root.path(), Some("../x")).is_err());
    }
}
