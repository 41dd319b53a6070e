//! Logs for other tools, derived from the committed manifest: a CSV in the format of Keras's
//! `CSVLogger` (`history.csv`) and a TensorBoard event file (per-epoch scalars, the training
//! loss every few steps, weight histograms). Both are rebuilt from `run.json` at every commit,
//! as `history.json` is, so a kill at any instant and a resume leave them agreeing with the
//! history, without duplicated epochs. The CSV is written atomically. The event file's content
//! only ever grows at its end (the events are a function of the history), so what it lacks is
//! appended in place: TensorBoard, which keeps an event file open and reads on where it left off,
//! follows a run live; a kill during the append leaves a partial last record, which TensorBoard's
//! readers wait on and the next commit completes. A file that is not a beginning of what it
//! should hold (damaged, or of another run) is replaced atomically. `evaluate` adds a second
//! event file with its scalars and pictures ([`write_evaluation`]).
//!
//! Nothing in this tool reads these files back to work: a damaged one costs nothing but the
//! view in TensorBoard or a spreadsheet, and the next commit replaces it.

pub mod histogram;
pub mod tensorboard;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::RunInfo;
use crate::error::{Error, Result};
use crate::fsutil::{open_regular, write_atomically};
use tensorboard::{Event, Image, Value};

/// The per-epoch log in Keras's `CSVLogger` format.
pub const CSV_FILE: &str = "history.csv";
/// Every event file of this tool starts so (TensorBoard looks for `tfevents` in the name).
pub const EVENTS_PREFIX: &str = "events.out.tfevents.";
/// The training event file's name ends so; `evaluate`'s with [`EVALUATE_SUFFIX`]. The names
/// sort the evaluation first, so a TensorBoard that follows the newest file follows training.
pub const TRAIN_SUFFIX: &str = ".mnist-cnn.train";
pub const EVALUATE_SUFFIX: &str = ".mnist-cnn.evaluate";
/// The per-epoch scalars are tagged `epoch/` and the history's own key (`epoch/val_loss`), so
/// that TensorBoard shows them as one group.
pub const EPOCH_TAG: &str = "epoch/";
pub const EPOCH_SCALARS: [&str; 5] = [
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
];
/// Tag of the training loss every few steps (the mean over those steps).
pub const STEP_LOSS_TAG: &str = "step/loss";
/// `evaluate`'s scalars (`evaluate/test_loss`) and pictures (`evaluate/confusion_matrix`).
pub const EVALUATE_TAG: &str = "evaluate/";
/// Tags of the weight histograms start so, followed by the parameter's name.
pub const WEIGHTS_TAG: &str = "weights/";
/// Largest picture put into an evaluation event file.
const MAX_PICTURE_BYTES: u64 = 64 << 20;

/// `events.out.tfevents.<start>.mnist-cnn.train`: named after the run's start, so it keeps
/// its name from commit to commit.
pub fn training_events_file(run: &RunInfo) -> String {
    format!("{EVENTS_PREFIX}{}{TRAIN_SUFFIX}", start_seconds(run))
}

pub fn evaluation_events_file(run: &RunInfo) -> String {
    format!("{EVENTS_PREFIX}{}{EVALUATE_SUFFIX}", start_seconds(run))
}

fn start_seconds(run: &RunInfo) -> u64 {
    run.started_at.map_or(0, |t| t.max(0.0) as u64)
}

/// Whether `name` is one of this tool's event files.
pub fn is_events_file(name: &str) -> bool {
    name.starts_with(EVENTS_PREFIX)
        && (name.ends_with(TRAIN_SUFFIX) || name.ends_with(EVALUATE_SUFFIX))
}

/// `history.csv` as Keras's `CSVLogger` writes it: a header, then one row per epoch, the epoch
/// counted from 0 as Keras counts it; the validation columns only for a run that validates.
/// The last column is the learning rate of the epoch's last step.
pub fn csv_text(run: &RunInfo) -> String {
    let validation = run.history.iter().any(|e| e.val_loss.is_some());
    let mut text = String::from(if validation {
        "epoch,accuracy,loss,val_accuracy,val_loss,lr\n"
    } else {
        "epoch,accuracy,loss,lr\n"
    });
    let cell = |value: Option<f64>| value.map_or(String::new(), |v| v.to_string());
    for e in &run.history {
        let _ = write!(text, "{},{},{}", e.epoch - 1, e.accuracy, e.loss);
        if validation {
            let _ = write!(text, ",{},{}", cell(e.val_accuracy), cell(e.val_loss));
        }
        let _ = writeln!(text, ",{}", cell(e.learning_rate));
    }
    text
}

pub fn write_csv(dir: &Path, run: &RunInfo) -> Result<()> {
    write_atomically(&dir.join(CSV_FILE), csv_text(run).as_bytes())
}

/// The training event file's events, from the manifest alone: per epoch the step losses (at
/// their global step), the epoch's scalars (at the epoch's number, as `history.json` counts
/// it) and the weight histograms. Wall times run from the start through each epoch's duration,
/// so that the file is the same whenever it is rebuilt, and grows only at its end.
pub fn training_events(run: &RunInfo) -> Vec<Event> {
    let start = run.started_at.unwrap_or(0.0);
    let mut events = vec![Event::file_version(start)];
    let mut time = start;
    for epoch in &run.history {
        let began = time;
        time += epoch.seconds.max(0.0);
        let steps = epoch.step_losses.len();
        for (i, step) in epoch.step_losses.iter().enumerate() {
            let at = began + (time - began) * (i + 1) as f64 / steps as f64;
            events.push(Event::summary(
                at,
                step.step,
                vec![Value::scalar(STEP_LOSS_TAG, step.loss)],
            ));
        }
        let values: Vec<Value> = EPOCH_SCALARS
            .iter()
            .zip([
                Some(epoch.loss),
                Some(epoch.accuracy),
                epoch.val_loss,
                epoch.val_accuracy,
                epoch.learning_rate,
            ])
            .filter_map(|(key, value)| {
                value.map(|v| Value::scalar(&format!("{EPOCH_TAG}{key}"), v))
            })
            .collect();
        events.push(Event::summary(time, epoch.epoch, values));
        if let Some(histograms) = run
            .weight_histograms
            .iter()
            .find(|h| h.epoch == epoch.epoch)
        {
            let values = histograms
                .parameters
                .iter()
                .map(|h| Value::histogram(&format!("{WEIGHTS_TAG}{}", h.name), h.to_proto()))
                .collect();
            events.push(Event::summary(time, epoch.epoch, values));
        }
    }
    events
}

/// Brings the training event file up to the manifest (see the module's documentation), and
/// removes event files of this tool's naming that another start of a run here left.
pub fn write_events(dir: &Path, run: &RunInfo) -> Result<()> {
    let name = training_events_file(run);
    let path = dir.join(&name);
    let bytes = tensorboard::encode(&training_events(run));
    if !append_missing(&path, &bytes)? {
        write_atomically(&path, &bytes)?;
    }
    remove_other_events(dir, &[&name, &evaluation_events_file(run)]);
    Ok(())
}

/// When the regular file at `path` holds a beginning of `bytes`, appends the rest to it (and
/// flushes it to disk) and returns true; otherwise touches nothing and returns false.
fn append_missing(path: &Path, bytes: &[u8]) -> Result<bool> {
    use std::io::{Read, Write};
    // Not followed: a link or anything but a plain file is replaced instead.
    let is_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return Ok(false);
    }
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
    {
        Ok(file) => file,
        Err(_) => return Ok(false),
    };
    let mut present = Vec::new();
    (&mut file)
        .take(bytes.len() as u64 + 1)
        .read_to_end(&mut present)
        .map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(&present) {
        return Ok(false);
    }
    if present.len() < bytes.len() {
        file.write_all(&bytes[present.len()..])
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(true)
}

fn remove_other_events(dir: &Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(name) = name.to_str()
            && is_events_file(name)
            && !keep.contains(&name)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What `evaluate` found, for the evaluation event file.
#[derive(Debug, Clone)]
pub struct EvaluationLog {
    /// `test` or `train`: the scalars are tagged `evaluate/test_loss`, ...
    pub split: String,
    pub loss: f64,
    pub accuracy: f64,
    /// PNG pictures it wrote, each tagged with its file's stem (`evaluate/confusion_matrix`).
    pub pictures: Vec<PathBuf>,
}

/// The evaluation event file of the run in `dir`: its scalars and pictures at the step of the
/// evaluated epoch. Replaces the one an earlier `evaluate` wrote.
pub fn write_evaluation(dir: &Path, run: &RunInfo, log: &EvaluationLog) -> Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut values = vec![
        Value::scalar(&format!("{EVALUATE_TAG}{}_loss", log.split), log.loss),
        Value::scalar(
            &format!("{EVALUATE_TAG}{}_accuracy", log.split),
            log.accuracy,
        ),
    ];
    for path in &log.pictures {
        let tag = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("picture");
        values.push(Value::image(
            &format!("{EVALUATE_TAG}{tag}"),
            png_image(path)?,
        ));
    }
    let events = [
        Event::file_version(now),
        Event::summary(now, run.completed_epochs, values),
    ];
    let path = dir.join(evaluation_events_file(run));
    write_atomically(&path, &tensorboard::encode(&events))?;
    Ok(path)
}

/// A PNG file as a TensorBoard image.
fn png_image(path: &Path) -> Result<Image> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(MAX_PICTURE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(&bytes))
        .map_err(|e| Error::corrupt(path, format!("not a PNG picture ({e})")))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let colorspace = match image::ImageDecoder::color_type(&decoder).channel_count() {
        1 | 2 => 1,
        3 => 3,
        _ => 4,
    };
    Ok(Image {
        height: i32::try_from(height).unwrap_or(i32::MAX),
        width: i32::try_from(width).unwrap_or(i32::MAX),
        colorspace,
        encoded_image_string: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{EpochStats, StepLoss};

    pub(crate) fn epoch(n: usize, validation: bool) -> EpochStats {
        EpochStats {
            epoch: n,
            loss: 1.0 / n as f64,
            accuracy: 0.25 * n as f64,
            val_loss: validation.then_some(0.5 / n as f64),
            val_accuracy: validation.then_some(0.95),
            seconds: 2.0,
            images_per_second: 100.0,
            learning_rate: Some(1e-3),
            step_losses: vec![
                StepLoss {
                    step: n * 4 - 2,
                    loss: 0.7,
                },
                StepLoss {
                    step: n * 4,
                    loss: 0.6,
                },
            ],
        }
    }

    #[test]
    fn csv_is_keras_csv_logger_format() {
        let mut run = crate::run::tests::sample_run();
        run.history = vec![epoch(1, true), epoch(2, true)];
        assert_eq!(
            csv_text(&run),
            "epoch,accuracy,loss,val_accuracy,val_loss,lr\n\
             0,0.25,1,0.95,0.5,0.001\n\
             1,0.5,0.5,0.95,0.25,0.001\n"
        );
        run.history = vec![epoch(1, false)];
        run.history[0].learning_rate = None;
        assert_eq!(csv_text(&run), "epoch,accuracy,loss,lr\n0,0.25,1,\n");
    }

    #[test]
    fn the_event_file_grows_in_place_and_is_replaced_when_damaged() {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut run = crate::run::tests::sample_run();
        run.started_at = Some(5.0);
        run.history = vec![epoch(1, true)];
        write_events(dir.path(), &run).unwrap();
        let path = dir.path().join(training_events_file(&run));
        let first = std::fs::metadata(&path).unwrap();
        run.history.push(epoch(2, true));
        write_events(dir.path(), &run).unwrap();
        let expected = tensorboard::encode(&training_events(&run));
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        #[cfg(unix)]
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            first.ino(),
            "appended in place"
        );
        // A partial last record (a kill during the append) is completed.
        std::fs::write(&path, &expected[..expected.len() - 7]).unwrap();
        write_events(dir.path(), &run).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        // Damage, or more than the manifest holds, is replaced whole.
        for wrong in [
            b"garbage".to_vec(),
            [expected.clone(), vec![1, 2, 3]].concat(),
        ] {
            std::fs::write(&path, wrong).unwrap();
            write_events(dir.path(), &run).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), expected);
        }
        // A link is replaced, not written through.
        #[cfg(unix)]
        {
            let elsewhere = dir.path().join("elsewhere");
            std::fs::write(&elsewhere, &expected[..10]).unwrap();
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
            write_events(dir.path(), &run).unwrap();
            assert_eq!(std::fs::read(&elsewhere).unwrap(), &expected[..10]);
            assert_eq!(std::fs::read(&path).unwrap(), expected);
        }
        // Another start's file is removed; the evaluation's stays.
        let old = dir.path().join("events.out.tfevents.1.mnist-cnn.train");
        let evaluation = dir.path().join(evaluation_events_file(&run));
        std::fs::write(&old, b"").unwrap();
        std::fs::write(&evaluation, b"").unwrap();
        write_events(dir.path(), &run).unwrap();
        assert!(!old.exists() && evaluation.exists());
    }

    #[test]
    fn events_grow_only_at_their_end_and_carry_every_value() {
        let mut run = crate::run::tests::sample_run();
        run.started_at = Some(1000.0);
        run.history = vec![epoch(1, true)];
        let one = tensorboard::encode(&training_events(&run));
        run.history.push(epoch(2, true));
        let events = training_events(&run);
        let two = tensorboard::encode(&events);
        assert!(two.starts_with(&one), "a commit appends to the file");
        // The file version, then per epoch two step losses and one summary of 5 scalars.
        assert_eq!(events.len(), 1 + 2 * 3);
        let last = &events[6];
        assert_eq!((last.step, last.wall_time), (2, 1004.0));
        let tags: Vec<&str> = last.values().iter().map(|v| v.tag.as_str()).collect();
        assert_eq!(tags, EPOCH_SCALARS.map(|key| format!("epoch/{key}")));
        assert_eq!(last.values()[2].as_scalar(), Some(0.25));
        assert_eq!(events[4].step, 6);
        assert_eq!(events[4].values()[0].tag, STEP_LOSS_TAG);
        assert_eq!(
            training_events_file(&run),
            "events.out.tfevents.1000.mnist-cnn.train"
        );
    }
}
