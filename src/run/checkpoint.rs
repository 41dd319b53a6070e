//! Checkpoints: the weights and optimizer state of a completed epoch, committed as one unit.
//!
//! A commit writes `model-epoch-N.bpk` and `optimizer-epoch-N.bpk` (each atomically), then the
//! manifest `run.json` naming them with their MD5 checksums. The rename of `run.json` is the
//! commit point: a kill before it leaves the previous manifest, whose files are still there; a
//! kill after it leaves the new one. Then come the conveniences derived from the manifest
//! (`history.json`, the `model.bpk` link, the plots), and the files of epochs before the
//! previous one are removed. The previous epoch's files stay one more epoch, so a reader that
//! read the old manifest can still open the weights it names.
//!
//! With early stopping, an epoch with the lowest validation loss so far first keeps its weights
//! as `best-model-epoch-N.bpk` ([`keep_best`]), named in the manifest it commits with. A run that
//! ends with those weights commits them as its checkpoint's weights ([`commit_kept_weights`]):
//! no file is rewritten, only a new manifest naming them is renamed into place. No commit ever
//! writes over a file that the committed manifest names.
//!
//! One training run at a time writes a directory: [`RunLock`] holds an advisory lock on
//! `.lock` there for the whole run.

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use super::{HISTORY_FILE, MODEL_FILE, RUN_FILE, RunInfo};
use crate::data::mnist::md5_hex;
use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomically, write_json_atomically};
use crate::model::Network;

pub const LOCK_FILE: &str = ".lock";
const MODEL_PREFIX: &str = "model-epoch-";
const OPTIMIZER_PREFIX: &str = "optimizer-epoch-";
/// With early stopping: the weights of an epoch with the lowest validation loss so far.
const BEST_PREFIX: &str = "best-model-epoch-";
/// Where runs written before the best weights had an epoch in their name kept them.
const LEGACY_BEST: &str = "best-model.bpk";
const BPK: &str = ".bpk";

/// A file of a checkpoint, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// The file's name inside the run directory.
    pub file: String,
    pub md5: String,
    pub bytes: u64,
}

impl FileDigest {
    pub fn of(file: String, contents: &[u8]) -> Self {
        Self {
            file,
            md5: md5_hex(contents),
            bytes: contents.len() as u64,
        }
    }

    /// The file's contents, refused unless they are exactly what was committed.
    pub fn read_verified(&self, path: &Path) -> Result<Vec<u8>> {
        // The size first, so a replaced file of any size costs no memory to refuse.
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let bytes = if size == self.bytes {
            std::fs::read(path).map_err(|e| Error::io(path, e))?
        } else {
            Vec::new()
        };
        if size != self.bytes || bytes.len() as u64 != self.bytes || md5_hex(&bytes) != self.md5 {
            return Err(Error::corrupt(
                path,
                format!(
                    "does not match the checksum in {RUN_FILE} ({} bytes, expected {}); the file was damaged or replaced",
                    size, self.bytes
                ),
            ));
        }
        Ok(bytes)
    }
}

/// The files of one committed epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFiles {
    pub epoch: usize,
    pub model: FileDigest,
    pub optimizer: FileDigest,
}

impl CheckpointFiles {
    /// The names of the checkpoint's files.
    pub fn names(&self) -> [&str; 2] {
        [&self.model.file, &self.optimizer.file]
    }
}

/// Commits `network` and the optimizer's state (`optimizer_state`, the bytes of its record, as
/// `train::Adam::to_bytes` gives them) as the checkpoint of `run.completed_epochs` epochs, with
/// `run` (whose history must hold those epochs) as its manifest. The files of the checkpoint
/// `run` named until now are kept, older ones removed.
pub fn commit(
    dir: &Path,
    network: &Network,
    optimizer_state: &[u8],
    run: &mut RunInfo,
) -> Result<()> {
    let epoch = run.completed_epochs;
    let previous = run.checkpoint.take();
    let model_bytes = model_bytes(network)?;
    let model = FileDigest::of(format!("{MODEL_PREFIX}{epoch}{BPK}"), &model_bytes);
    let optimizer = FileDigest::of(format!("{OPTIMIZER_PREFIX}{epoch}{BPK}"), optimizer_state);
    write_atomically(&dir.join(&model.file), &model_bytes)?;
    crash_point();
    write_atomically(&dir.join(&optimizer.file), optimizer_state)?;
    crash_point();
    run.checkpoint = Some(CheckpointFiles {
        epoch,
        model,
        optimizer,
    });
    write_json_atomically(&dir.join(RUN_FILE), run)?;
    crash_point();
    let mut keep: Vec<&str> = Vec::new();
    keep.extend(previous.iter().flat_map(CheckpointFiles::names));
    write_derived(dir, run, &keep)
}

/// Keeps `network`'s weights as the best of `epoch` (1-based) so far, in a file of their own;
/// the manifest committed with the epoch names it (as [`BestEpoch`](super::BestEpoch)'s model).
pub fn keep_best(dir: &Path, network: &Network, epoch: usize) -> Result<FileDigest> {
    let bytes = model_bytes(network)?;
    let best = FileDigest::of(format!("{BEST_PREFIX}{epoch}{BPK}"), &bytes);
    write_atomically(&dir.join(&best.file), &bytes)?;
    crash_point();
    Ok(best)
}

/// Commits the weights already kept in `model` (the best epoch's, see [`keep_best`]) as the
/// weights of `run`'s checkpoint, beside the optimizer state it has: the manifest is the only
/// file written, so a kill leaves the previous manifest, whose files are untouched, or this one.
pub fn commit_kept_weights(dir: &Path, model: FileDigest, run: &mut RunInfo) -> Result<()> {
    let Some(previous) = run.checkpoint.take() else {
        return Err(Error::corrupt(
            dir.join(RUN_FILE),
            "names no checkpoint to commit the kept weights beside",
        ));
    };
    run.checkpoint = Some(CheckpointFiles {
        epoch: run.completed_epochs,
        model,
        optimizer: previous.optimizer.clone(),
    });
    write_json_atomically(&dir.join(RUN_FILE), run)?;
    crash_point();
    write_derived(dir, run, &previous.names())
}

/// The weights of `network` as a `.bpk` file holds them.
fn model_bytes(network: &Network) -> Result<Vec<u8>> {
    network
        .clone()
        .into_record()
        .into_bytes()
        .map(|bytes| bytes.to_vec())
        .map_err(|e| Error::Serialize {
            what: "model",
            reason: e.to_string(),
        })
}

/// The files of this tool's naming that the manifest `run` names: its checkpoint's and its
/// best epoch's.
fn named_by(run: &RunInfo) -> impl Iterator<Item = &str> {
    let checkpoint = run.checkpoint.iter().flat_map(CheckpointFiles::names);
    checkpoint.chain(run.best.iter().map(|best| best.model.file.as_str()))
}

/// The files derived from the committed manifest `run`: `history.json`, the `model.bpk`
/// link, the CSV log and the TensorBoard event file ([`super::logs`]); then the removal of
/// checkpoint files that neither `run` nor `keep` names. A resumed run calls it too, to finish
/// what a killed commit left undone.
pub fn write_derived(dir: &Path, run: &RunInfo, keep: &[&str]) -> Result<()> {
    write_json_atomically(&dir.join(HISTORY_FILE), &run.history)?;
    crash_point();
    link_stable_model(dir, run)?;
    crash_point();
    super::logs::write_csv(dir, run)?;
    crash_point();
    super::logs::write_events(dir, run)?;
    crash_point();
    let mut keep = keep.to_vec();
    keep.extend(named_by(run));
    remove_unreferenced(dir, &keep)
}

/// Removes the checkpoint files a killed run wrote without committing them. The run committed
/// in `dir`, if any, stays readable (until a new run commits its first epoch there).
pub fn remove_uncommitted(dir: &Path) -> Result<()> {
    let committed = RunInfo::load(dir).ok();
    let keep: Vec<&str> = committed.iter().flat_map(named_by).collect();
    remove_unreferenced(dir, &keep)
}

/// `model.bpk`: a hard link to (or, where links are not possible, a copy of) the committed
/// weights, replaced atomically.
fn link_stable_model(dir: &Path, run: &RunInfo) -> Result<()> {
    let Some(files) = &run.checkpoint else {
        return Ok(());
    };
    let source = dir.join(&files.model.file);
    let target = dir.join(MODEL_FILE);
    let temp = dir.join(format!(
        "{}{MODEL_FILE}",
        crate::fsutil::temp::temp_prefix()
    ));
    let _registration = crate::fsutil::temp::Registration::new(&temp);
    let _ = std::fs::remove_file(&temp);
    if std::fs::hard_link(&source, &temp).is_ok() {
        std::fs::rename(&temp, &target).map_err(|e| Error::io(&target, e))?;
        // Renaming a link onto another link of the same file does nothing at all (POSIX), as
        // when a finished run is resumed: the temporary link is still there.
        if temp.symlink_metadata().is_ok() {
            std::fs::remove_file(&temp).map_err(|e| Error::io(&temp, e))?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
    write_atomically(&target, &bytes)
}

/// Removes checkpoint files of this tool's naming that `keep` does not name: those of older
/// epochs, and those a killed run wrote without committing.
pub(crate) fn remove_unreferenced(dir: &Path, keep: &[&str]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name == LEGACY_BEST
            || [MODEL_PREFIX, OPTIMIZER_PREFIX, BEST_PREFIX]
                .iter()
                .any(|prefix| {
                    name.strip_prefix(prefix)
                        .and_then(|rest| rest.strip_suffix(BPK))
                        .is_some_and(|epoch| epoch.parse::<usize>().is_ok())
                });
        if ours && !keep.contains(&name) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// What a resumed run continues from.
pub struct Resumed {
    pub run: RunInfo,
    pub network: Network,
    /// The optimizer's state as committed (checked against the manifest): the bytes of its
    /// record, for `train::Adam::load_bytes`.
    pub optimizer_state: Vec<u8>,
    /// The file `optimizer_state` was read from, to name in an error.
    pub optimizer_path: PathBuf,
}

/// The last committed checkpoint in `dir`, for a run that `fresh` describes.
pub fn load_for_resume(dir: &Path, fresh: &RunInfo, device: &Device) -> Result<Resumed> {
    let saved = RunInfo::load(dir)?;
    let differences = saved.resume_differences(fresh);
    if !differences.is_empty() {
        return Err(Error::ResumeMismatch {
            dir: dir.to_path_buf(),
            differences: differences.join(", "),
        });
    }
    let Some(files) = &saved.checkpoint else {
        return Err(Error::corrupt(
            dir.join(RUN_FILE),
            "was written by an older mnist-cnn without a checkpoint manifest and cannot be resumed",
        ));
    };
    let network = saved.load_network(dir, device)?;
    let optimizer_path = dir.join(&files.optimizer.file);
    let optimizer_state = files.optimizer.read_verified(&optimizer_path)?;
    Ok(Resumed {
        run: saved,
        network,
        optimizer_state,
        optimizer_path,
    })
}

/// The history as last committed, from `history.json` (for readers that only plot it).
pub fn read_history(dir: &Path) -> Result<Vec<super::EpochStats>> {
    read_json(&dir.join(HISTORY_FILE))
}

/// An advisory lock on a run directory, held while a training run writes it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, failing at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let path: PathBuf = dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                // What a killed run was writing is of no use to anyone now.
                crate::fsutil::sweep_stale_temporaries(dir);
                Ok(Self { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::RunLocked {
                dir: dir.to_path_buf(),
                lock: path,
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// Test hook: with `MNIST_CNN_CRASH_AFTER_WRITE=N`, the process aborts (as under `kill -9`:
/// no destructors, no cleanup) right after the N-th file of a checkpoint commit is in place,
/// counting across the whole run. The fault-injection tests use it to stop a commit between
/// every pair of its writes.
fn crash_point() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("MNIST_CNN_CRASH_AFTER_WRITE")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(limit) = limit
        && WRITES.fetch_add(1, Ordering::SeqCst) + 1 == *limit
    {
        std::process::abort();
    }
}
