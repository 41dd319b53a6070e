//! What the handlers share: the loaded model (replaced when training commits an epoch), the
//! test split, cached test-set results, and the pool the network runs on.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use burn::prelude::Device;

use crate::backend::BackendKind;
use crate::data::{self, Split, SplitKind};
use crate::error::Result;
use crate::evaluate::{self, Evaluation};
use crate::model::Network;
use crate::run::{RUN_FILE, RunInfo, TrainedRun};

use super::collect::CollectFolder;
use super::{Limits, ServeOptions};

/// A trained model as loaded from the model directory.
pub struct Model {
    /// Counts loads since the server started: 1 for the first model, 2 after a reload, ...
    pub version: u64,
    /// The manifest of the loaded epoch, with the history up to it.
    pub run: RunInfo,
    pub network: Network,
    /// Why the test split cannot be used with this model, if it cannot.
    pub test_problem: Option<String>,
}

/// The test split's predictions by one model version.
pub struct TestResults {
    pub version: u64,
    pub evaluation: Evaluation,
    /// Per test image: predicted class and its probability.
    pub predictions: Vec<(usize, f64)>,
}

/// Identifies one committed state of the model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
    })
}

pub struct AppState {
    pub model_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The backend predictions run on (`auto` resolved), its device and a description of it.
    pub backend: BackendKind,
    pub device: Device,
    pub device_name: String,
    pub(crate) collect: Option<CollectFolder>,
    pub limits: Limits,
    /// What the server is doing now.
    pub load: Arc<Load>,
    /// The places of [`Limits::max_uploads`].
    uploads: Arc<Semaphore>,
    /// The test split, or why it could not be loaded.
    pub test: std::result::Result<Arc<Split>, String>,
    model: RwLock<Option<Arc<Model>>>,
    loaded_stamp: Mutex<Option<Stamp>>,
    versions: AtomicU64,
    /// Last load failure, reported once per change.
    last_problem: Mutex<Option<String>>,
    cache: tokio::sync::Mutex<Option<Arc<TestResults>>>,
}

/// What the server is doing now, as `/api/info` reports it.
#[derive(Debug, Default)]
pub struct Load {
    /// Open connections.
    pub connections: AtomicUsize,
    /// Requests with a body being read or computed (or computations going on for a request
    /// that timed out, until their current step ends).
    pub uploads: AtomicUsize,
    /// Requests with a body waiting for a place among those.
    pub waiting: AtomicUsize,
}

impl AppState {
    /// Loads the test split and, if one is there, the model. A directory without a model yet
    /// is fine (training may be about to write one); a model that does not load is an error.
    pub fn new(options: &ServeOptions) -> Result<Self> {
        let test = data::load_split(&options.data_dir, SplitKind::Test)
            .map(Arc::new)
            .map_err(|e| format!("the test split is not available: {e}"));
        let backend = options.backend.start()?;
        let state = AppState {
            model_dir: options.model_dir.clone(),
            data_dir: options.data_dir.clone(),
            backend,
            device: backend.device(),
            device_name: backend.describe(),
            collect: options
                .collect
                .as_ref()
                .map(|dir| CollectFolder::open(dir, &options.limits)),
            limits: options.limits.clone(),
            load: Arc::default(),
            uploads: Arc::new(Semaphore::new(options.limits.max_uploads.max(1))),
            test,
            model: RwLock::new(None),
            loaded_stamp: Mutex::new(None),
            versions: AtomicU64::new(0),
            last_problem: Mutex::new(None),
            cache: tokio::sync::Mutex::new(None),
        };
        if options.model_dir.join(RUN_FILE).is_file() {
            state.load()?;
        }
        Ok(state)
    }

    /// The model now in use, if any.
    pub fn current(&self) -> Option<Arc<Model>> {
        self.model.read().ok().and_then(|model| model.clone())
    }

    /// Reloads the model when the directory holds a newer committed epoch than the one loaded;
    /// returns whether it did. `run.json` is the commit point of a checkpoint: it is renamed
    /// into place after the weights it names are complete.
    pub fn refresh(&self) -> Result<bool> {
        let committed = stamp(&self.model_dir.join(RUN_FILE));
        let seen = self.loaded_stamp.lock().ok().and_then(|s| s.clone());
        if committed.is_none() || committed == seen {
            return Ok(false);
        }
        self.load()?;
        Ok(true)
    }

    fn load(&self) -> Result<()> {
        let committed = stamp(&self.model_dir.join(RUN_FILE));
        let TrainedRun {
            info: run, network, ..
        } = TrainedRun::open(&self.model_dir, &self.device)?;
        let test_problem = match &self.test {
            Ok(split) => run
                .check_data(split, &self.data_dir)
                .err()
                .map(|e| e.to_string()),
            Err(problem) => Some(problem.clone()),
        };
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        let model = Arc::new(Model {
            version,
            run,
            network,
            test_problem,
        });
        if let Ok(mut slot) = self.model.write() {
            *slot = Some(model);
        }
        if let Ok(mut seen) = self.loaded_stamp.lock() {
            *seen = committed;
        }
        Ok(())
    }

    /// Test-set results of the current model, computed once per model version.
    pub async fn results(
        &self,
        model: &Arc<Model>,
    ) -> std::result::Result<Arc<TestResults>, String> {
        if let Some(problem) = &model.test_problem {
            return Err(problem.clone());
        }
        let split = self.test.clone()?;
        let mut cached = self.cache.lock().await;
        if let Some(results) = cached.as_ref()
            && results.version == model.version
        {
            return Ok(results.clone());
        }
        let (model_for_pool, device) = (model.clone(), self.device.clone());
        let results = compute(move || {
            let evaluation = evaluate::evaluate(
                &model_for_pool.network,
                &split,
                SplitKind::Test,
                &model_for_pool.run.class_names,
                500,
                &device,
            );
            let indices: Vec<usize> = (0..split.len()).collect();
            let scores = crate::model::log_probabilities(
                &model_for_pool.network,
                &split,
                &indices,
                500,
                &device,
            );
            let predictions = scores
                .rows()
                .map(|row| {
                    let best = crate::model::argmax(row);
                    (best, f64::from(row[best]).exp())
                })
                .collect();
            TestResults {
                version: model_for_pool.version,
                evaluation,
                predictions,
            }
        })
        .await?;
        let results = Arc::new(results);
        *cached = Some(results.clone());
        Ok(results)
    }

    /// A place among the requests whose body is read and computed at once, waited for; `None`
    /// when [`Limits::max_waiting_uploads`] requests are waiting already. A request that times
    /// out while waiting gives up its turn.
    pub async fn upload_slot(&self) -> Option<UploadSlot> {
        let permit = match self.uploads.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = Counted::new(&self.load, |load| &load.waiting);
                if waiting.before >= self.limits.max_waiting_uploads {
                    return None;
                }
                self.uploads.clone().acquire_owned().await.ok()?
            }
        };
        Some(UploadSlot {
            _permit: permit,
            _counted: Counted::new(&self.load, |load| &load.uploads),
        })
    }

    fn report_problem(&self, problem: Option<String>) {
        if let Ok(mut last) = self.last_problem.lock()
            && *last != problem
        {
            if let Some(problem) = &problem {
                eprintln!("warning: keeping the loaded model: {problem}");
            }
            *last = problem;
        }
    }
}

/// Checks the model directory every [`super::WATCH_INTERVAL`] and reloads on a new epoch.
pub async fn watch(state: Arc<AppState>) {
    let mut ticks = tokio::time::interval(super::WATCH_INTERVAL);
    loop {
        ticks.tick().await;
        let polled = state.clone();
        let outcome = tokio::task::spawn_blocking(move || polled.refresh()).await;
        match outcome {
            Ok(Ok(true)) => {
                if let Some(model) = state.current() {
                    eprintln!(
                        "loaded the model of epoch {} from {}",
                        model.run.completed_epochs,
                        state.model_dir.display()
                    );
                }
                state.report_problem(None);
            }
            Ok(Ok(false)) => {}
            Ok(Err(problem)) => state.report_problem(Some(problem.to_string())),
            Err(_) => state.report_problem(Some("reloading the model failed".into())),
        }
    }
}

/// Runs `work` on the rayon pool that the tensor kernels use and awaits its result; a panic in
/// `work` becomes an error instead of taking the server down. Work whose request is gone (timed
/// out) before it starts is skipped.
pub async fn compute<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, String> {
    compute_for_request(|_| work()).await
}

/// One of [`Limits::max_uploads`] places: a request holds it while its body is read and moves it
/// into its computation, so that a computation going on after its request timed out still
/// holds it.
pub struct UploadSlot {
    _permit: OwnedSemaphorePermit,
    _counted: Counted,
}

/// One in a [`Load`] counter, for as long as it lives.
struct Counted {
    load: Arc<Load>,
    counter: fn(&Load) -> &AtomicUsize,
    /// The count before this one.
    before: usize,
}

impl Counted {
    fn new(load: &Arc<Load>, counter: fn(&Load) -> &AtomicUsize) -> Counted {
        let before = counter(load).fetch_add(1, Ordering::SeqCst);
        Counted {
            load: load.clone(),
            counter,
            before,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.counter)(&self.load).fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether the request a computation is for still awaits its answer: one answered 408, or
/// whose client went away, does not, and its computation stops before its next step.
#[derive(Clone, Default)]
pub struct Requester {
    gone: Arc<AtomicBool>,
}

/// The requester of a computation went away.
#[derive(Debug)]
pub struct Gone;

impl Requester {
    /// `Err(Gone)` once nobody awaits the answer.
    pub fn check(&self) -> std::result::Result<(), Gone> {
        if self.gone.load(Ordering::SeqCst) {
            Err(Gone)
        } else {
            Ok(())
        }
    }
}

/// Marks the requester gone when the future awaiting the computation is dropped (a timeout)
/// or done.
struct MarkGoneOnDrop(Requester);

impl Drop for MarkGoneOnDrop {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::SeqCst);
    }
}

/// [`compute`] for work that checks [`Requester::check`] before its expensive steps. Work
/// whose requester is gone before it starts does not start.
pub async fn compute_for_request<T: Send + 'static>(
    work: impl FnOnce(&Requester) -> T + Send + 'static,
) -> std::result::Result<T, String> {
    let requester = Requester::default();
    let _mark = MarkGoneOnDrop(requester.clone());
    let (done, result) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        if requester.check().is_err() {
            return;
        }
        let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(|| {
            work(&requester)
        })));
    });
    match result.await {
        Ok(Ok(value)) => Ok(value),
        _ => Err("the computation failed".into()),
    }
}

/// The answer no one reads: the computation's request timed out or its client went away.
impl From<Gone> for super::error::ApiError {
    fn from(_: Gone) -> Self {
        Self::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "the request is gone",
        )
    }
}
