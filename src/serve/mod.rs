//! `mnist-cnn serve`: a local web page to draw digits and see the network's answer and layers,
//! browse the test set and watch a training run, with the JSON API the page uses.
//!
//! The server is axum on a small tokio runtime, behind its own accept loop ([`listen`]: a
//! header-read timeout, a connection cap); the network runs on the rayon pool that the CPU
//! kernels use ([`state::compute`]), so requests run concurrently without oversubscribing the
//! cores. Requests with a body take one of a few places before their body is read and keep it
//! through their computation, which stops once the request has timed out ([`Limits`]). Every
//! request must name this server in its `Host` header, and writes from other origins are
//! refused ([`guard`]). The trained model is loaded once, shared behind an `Arc`, and replaced when a
//! `train --out` into the same directory commits a new epoch ([`state::AppState::refresh`]).
//! The page's assets are compiled into the binary.
//!
//! API (every error is `{"error": "..."}` with a 4xx/5xx status: among them 403 for another
//! host or origin, 408 past the request timeout, 413 past the body limit, 503 when too many
//! pictures wait, 507 when the collect folder is full):
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/info` | | the model: architecture, classes, image size and channels, its picture pipeline, epochs, what is available |
//! | `POST /api/predict?top=N&input=true` | PNG/JPEG, or JSON `{"image": base64}` | `predict --json` for one picture (`input` adds the prepared pixels) |
//! | `POST /api/inspect` | as predict, or JSON `{"test_index": N}` | every layer's values (`inspect --json`) |
//! | `POST /api/inspect/{picture}` | as `/api/inspect` | one of `inspect`'s pictures as PNG |
//! | `GET /api/test/{index}` | | a test image: label, pixels, all class probabilities |
//! | `GET /api/test?label=L&predicted=P&mistakes=true&limit=N` | | test images of a confusion-matrix cell, or the most confident mistakes |
//! | `GET /api/metrics` | | test-set loss, accuracy, per-class metrics, confusion matrix, mistakes |
//! | `GET /api/history` | | the run's history, epochs done and planned, model version |
//! | `GET /api/runs` | | the runs beside the served one (its folder of runs), newest first |
//! | `GET /api/runs/{name}/history` | | one of those runs' history |
//! | `POST /api/collect` | JSON `{"class": N, "image": base64}` | saves the drawing in `--collect DIR/<class>/` (the class name percent-encoded where no folder name can hold it) |

mod api;
mod assets;
mod collect;
mod error;
mod guard;
mod listen;
mod runs;
pub mod state;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use state::AppState;

pub use guard::HostGuard;

/// Largest request body: a drawing is a few kB, a photo of a digit a few MB.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Requests taking longer than this are answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the model directory is checked for a newly committed epoch.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// What a client may cost the server. The defaults suit a page left open while a learner
/// draws; tests use small values.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// A request's whole time, from its headers to its answer (408 beyond).
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers, and the longest a kept-alive connection
    /// may sit idle; the connection is closed beyond it.
    pub header_timeout: Duration,
    /// Open connections at most (fewer if the process may not open that many files). When a
    /// new client comes at the cap, the connection idle longest (one sending no request, or
    /// one still sending its headers) is closed to make room.
    pub max_connections: usize,
    /// Requests with a body (pictures) read and computed at once; each holds its body and
    /// decoded picture in memory.
    pub max_uploads: usize,
    /// Requests with a body that may wait for one of those places (503 beyond).
    pub max_waiting_uploads: usize,
    /// Files the collect folder may hold (507 beyond), counting those already there.
    pub collect_max_files: u64,
    /// Bytes the collect folder's pictures may take (507 beyond), counting those already there.
    pub collect_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            request_timeout: REQUEST_TIMEOUT,
            header_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_uploads: 4,
            max_waiting_uploads: 256,
            collect_max_files: 10_000,
            collect_max_bytes: 100_000_000,
        }
    }
}

/// What `serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Directory of a trained model, or of a run that `train --out` is about to write.
    pub model_dir: PathBuf,
    /// Data directory whose test split the page browses.
    pub data_dir: PathBuf,
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// Where "save as class N" writes drawings; `None` turns collecting off.
    pub collect: Option<PathBuf>,
    pub backend: BackendKind,
    /// Host names that requests may give in their `Host` header besides the address served
    /// (`localhost`, `127.0.0.1`, `[::1]`, the `host` address), e.g. this machine's name on a
    /// local network. Other names are refused: a web page could reach the server through DNS
    /// rebinding with them.
    pub allowed_hosts: Vec<String>,
    pub limits: Limits,
}

/// A warning for addresses that other machines can reach, or `None` for loopback.
pub fn exposure_warning(address: SocketAddr, collecting: bool) -> Option<String> {
    if address.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "warning: listening on {address}, beyond this machine: anyone who can reach it can use the \
         model{}; there is no authentication. Use --host 127.0.0.1 to keep it local.",
        if collecting {
            " and write drawings into the collect folder"
        } else {
            ""
        }
    ))
}

/// A running server: its address, and a handle to stop it or wait for it.
pub struct Server {
    address: SocketAddr,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Loads the model (if one is there yet) and the test split, binds the address and starts
    /// serving on a background thread.
    pub fn start(options: ServeOptions) -> Result<Server> {
        let state = Arc::new(AppState::new(&options)?);
        let address = SocketAddr::new(options.host, options.port);
        let failed = |reason: String| Error::Serve {
            address: address.to_string(),
            reason,
        };
        let listener =
            TcpListener::bind(address).map_err(|e| failed(format!("cannot listen there ({e})")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed(format!("cannot listen there ({e})")))?;
        let address = listener
            .local_addr()
            .map_err(|e| failed(format!("cannot listen there ({e})")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mnist-cnn-serve")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| failed(format!("cannot start the runtime ({e})")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let guard = HostGuard::new(address, &options.allowed_hosts);
        let app = router(state.clone(), guard);
        let watched = state.clone();
        let (limits, load) = (options.limits.clone(), state.load.clone());
        let thread = std::thread::Builder::new()
            .name("mnist-cnn-serve".into())
            .spawn(move || {
                let failed = |reason: String| Error::Serve {
                    address: address.to_string(),
                    reason,
                };
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| failed(format!("cannot listen there ({e})")))?;
                    tokio::spawn(state::watch(watched));
                    listen::serve(listener, app, &limits, load, async {
                        let _ = stopped.await;
                    })
                    .await;
                    Ok(())
                })
            })
            .map_err(|e| failed(format!("cannot start its thread ({e})")))?;
        Ok(Server {
            address,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://address/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// Whether a trained model is loaded (a run still in its first epoch has none yet).
    pub fn has_model(&self) -> bool {
        self.state.current().is_some()
    }

    /// Serves until the process ends (Ctrl-C).
    pub fn wait(mut self) -> Result<()> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Serve {
                address: self.address.to_string(),
                reason: "its thread failed".into(),
            }),
            None => Ok(()),
        }
    }

    /// Stops accepting connections, finishes the requests in flight and returns.
    pub fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The page and the API, with body-size and time limits, refusing requests for other hosts and
/// cross-origin writes, and answering every error as `{"error": ...}`.
pub fn router(state: Arc<AppState>, guard: HostGuard) -> Router {
    let limits = state.limits.clone();
    let routes = Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/info", get(api::info))
        .route("/api/predict", post(api::predict))
        .route("/api/inspect", post(api::inspect))
        .route("/api/inspect/{picture}", post(api::inspect_picture))
        .route("/api/test", get(api::test_items))
        .route("/api/test/{index}", get(api::test_item))
        .route("/api/metrics", get(api::metrics))
        .route("/api/history", get(api::history))
        .route("/api/runs", get(runs::runs))
        .route("/api/runs/{name}/history", get(runs::history))
        .route("/api/collect", post(api::collect))
        .fallback(api::not_found)
        .layer((
            DefaultBodyLimit::disable(),
            RequestBodyLimitLayer::new(limits.max_body_bytes),
            TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout),
        ))
        .with_state(state);
    // Around the whole router rather than each route (`Router::layer`), so that the host check
    // comes first for every path and the JSON errors see axum's finished 405 (with `Allow`).
    let guarded = tower::ServiceBuilder::new()
        .layer(axum::middleware::map_response_with_state(
            limits,
            guard::json_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            guard::check_host,
        ))
        .service(routes);
    Router::new().fallback_service(guarded)
}
