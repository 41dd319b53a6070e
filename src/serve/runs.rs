//! The runs beside the served one, for the Training view's run picker: `GET /api/runs` lists
//! them (the folder that holds the served run), `GET /api/runs/{name}/history` gives one's
//! history. Only plain names of that folder's entries are read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::run::RunInfo;
use crate::run::catalog::{is_plain_name, list_runs};

use super::state::AppState;

/// The folder of runs that holds the served run, and the served run's name in it. For
/// `runs/latest` that is `runs` and the run `latest` points at now.
fn root_and_current(model_dir: &Path) -> (PathBuf, Option<String>) {
    match std::fs::canonicalize(model_dir) {
        Ok(dir) => (
            crate::fsutil::parent_dir(&dir).to_path_buf(),
            dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        ),
        Err(_) => (crate::fsutil::parent_dir(model_dir).to_path_buf(), None),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `{"current": NAME, "runs": [{"name", "started", "completed_epochs", "epochs", ...}]}`,
/// newest first; entries that are no readable run are left out.
pub async fn runs(State(state): State<Arc<AppState>>) -> Response {
    let model_dir = state.model_dir.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let (root, current) = root_and_current(&model_dir);
        let runs: Vec<Value> = list_runs(&root)
            .into_iter()
            .filter_map(|entry| {
                let run = entry.summary?;
                Some(json!({
                    "name": entry.name,
                    "latest": entry.latest,
                    "running": entry.running,
                    "started": run.started,
                    "model": run.model,
                    "data": run.data,
                    "completed_epochs": run.completed_epochs,
                    "epochs": run.epochs,
                    "best_val_accuracy": run.best_val_accuracy,
                    "options": run.options,
                }))
            })
            .collect();
        json!({ "current": current, "runs": runs })
    })
    .await;
    match listed {
        Ok(value) => Json(value).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "listing the runs failed".into(),
        ),
    }
}

/// One run's history: `{"name", "completed_epochs", "epochs", "history"}`.
pub async fn history(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if !is_plain_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a run name"),
        );
    }
    let model_dir = state.model_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let (root, _) = root_and_current(&model_dir);
        RunInfo::load(&root.join(&name)).map(|run| (name, run))
    })
    .await;
    match loaded {
        Ok(Ok((name, run))) => Json(json!({
            "name": name,
            "completed_epochs": run.completed_epochs,
            "epochs": run.config.epochs,
            "history": run.history,
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the run failed".into(),
        ),
    }
}
