//! The JSON API: small handlers that check the request, run the library on the compute pool
//! and answer JSON (or PNG for pictures). Every failure is `{"error": "..."}` with a status.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data::class_folder::folder_of_class;
use crate::data::image::decode_bytes;
use crate::evaluate::MISTAKES_SHOWN;
use crate::inspect;
use crate::predict::top_classes;

use super::error::{ApiError, ApiResult, internal};
use super::state::{AppState, Model, UploadSlot, compute, compute_for_request};

pub(super) type Shared = State<Arc<AppState>>;

/// The model, or 503 while none has been trained yet.
pub(super) fn model(state: &AppState) -> ApiResult<Arc<Model>> {
    state.current().ok_or_else(|| {
        ApiError::unavailable(format!(
            "no trained model in {} yet; run `mnist-cnn train --out {}` (the page picks it up after its first epoch)",
            state.model_dir.display(),
            state.model_dir.display()
        ))
    })
}

fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> ApiResult<T> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(value)| value)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

/// Decodes base64, with or without a `data:image/png;base64,` prefix.
pub(super) fn base64_picture(text: &str) -> ApiResult<Vec<u8>> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map_or("", |(_, data)| data),
        None => text,
    };
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ApiError::bad_request(format!("the image is not valid base64 ({e})")))
}

pub(super) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A request's body, read while it holds one of the upload places; the place moves into its
/// computation.
pub(super) struct Upload {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub slot: UploadSlot,
}

/// Waits for an upload place (503 when too many requests wait already), then reads the body
/// (413 beyond the limit). Until then the body stays unread, in the connection.
pub(super) async fn receive(state: &AppState, request: Request) -> ApiResult<Upload> {
    let Some(slot) = state.upload_slot().await else {
        return Err(ApiError::unavailable(format!(
            "the server is busy: {} pictures are being read and {} more wait; try again shortly",
            state.limits.max_uploads, state.limits.max_waiting_uploads
        )));
    };
    let headers = request.headers().clone();
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the limit of {} bytes",
                    state.limits.max_body_bytes
                ),
            ),
            status => ApiError::new(status, rejection.body_text()),
        })?;
    Ok(Upload {
        headers,
        body,
        slot,
    })
}

/// What a request asks the network to look at.
enum Input {
    /// An encoded PNG or JPEG.
    Picture(Bytes),
    /// An image of the test split.
    TestImage(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    image: Option<String>,
    test_index: Option<usize>,
}

const PICTURE_TYPES: &str = "send a PNG or JPEG picture (Content-Type: image/png or image/jpeg), or JSON {\"image\": \"<base64>\"} with Content-Type: application/json";

fn input(headers: &HeaderMap, body: Bytes, allow_test_image: bool) -> ApiResult<Input> {
    match content_type(headers).as_str() {
        "image/png" | "image/jpeg" | "image/jpg" => Ok(Input::Picture(body)),
        "application/json" => {
            let request: InputJson = parse_json(&body)?;
            match (request.image, request.test_index) {
                (Some(image), None) => Ok(Input::Picture(Bytes::from(base64_picture(&image)?))),
                (None, Some(index)) if allow_test_image => Ok(Input::TestImage(index)),
                _ if allow_test_image => Err(ApiError::bad_request(
                    "give exactly one of \"image\" (base64 PNG or JPEG) and \"test_index\"",
                )),
                _ => Err(ApiError::bad_request(
                    "give \"image\": a base64 PNG or JPEG",
                )),
            }
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PICTURE_TYPES,
        )),
    }
}

/// The pixels the network reads for `input`: a picture prepared by the model's own pipeline,
/// as `predict` and `inspect` prepare it, or a test image as stored.
fn pixels(state: &AppState, model: &Model, input: &Input) -> ApiResult<Vec<u8>> {
    match input {
        Input::Picture(bytes) => {
            if bytes.is_empty() {
                return Err(ApiError::bad_request("the request has no picture"));
            }
            let pipeline = model
                .run
                .picture_pipeline(None)
                .map_err(|e| internal(e.to_string()))?;
            pipeline
                .prepare_bytes(bytes)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
        }
        Input::TestImage(index) => {
            let split = test_split(state, model)?;
            split
                .image_checked(*index)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| test_index_error(*index, split.len()))
        }
    }
}

fn test_index_error(index: usize, len: usize) -> ApiError {
    ApiError::not_found(format!(
        "test index {index} is out of range: the test split has {len} images (0..={})",
        len.saturating_sub(1)
    ))
}

fn test_split(state: &AppState, model: &Model) -> ApiResult<Arc<crate::data::Split>> {
    if let Some(problem) = &model.test_problem {
        return Err(ApiError::not_found(problem.clone()));
    }
    state.test.clone().map_err(ApiError::not_found)
}

trait ImageChecked {
    fn image_checked(&self, index: usize) -> Option<&[u8]>;
}

impl ImageChecked for crate::data::Split {
    fn image_checked(&self, index: usize) -> Option<&[u8]> {
        (index < self.len()).then(|| self.image(index))
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such page or API: {}", uri.path()))
}

pub async fn info(State(state): Shared) -> Json<Value> {
    let model = state.current().map(|model| {
        let run = &model.run;
        let pipeline = run.pipeline();
        json!({
            "version": model.version,
            "architecture": run.config.architecture,
            "rows": run.shape.rows,
            "cols": run.shape.cols,
            "channels": run.shape.channels,
            "pipeline": { "name": pipeline.name(), "description": pipeline.describe() },
            "class_names": run.class_names,
            "parameters": run.parameters,
            "completed_epochs": run.completed_epochs,
            "epochs": run.config.epochs,
            "pictures": inspect::pictures(&model.network),
            "test_problem": model.test_problem,
        })
    });
    Json(json!({
        "model": model,
        "model_dir": state.model_dir,
        "test_images": state.test.as_ref().ok().map(|split| split.len()),
        "collect": state.collect.is_some(),
        "max_body_bytes": state.limits.max_body_bytes,
        "load": {
            "connections": state.load.connections.load(Ordering::Relaxed),
            "uploads": state.load.uploads.load(Ordering::Relaxed),
            "waiting": state.load.waiting.load(Ordering::Relaxed),
        },
        "backend": { "name": state.backend.name(), "device": state.device_name },
    }))
}

#[derive(Deserialize)]
struct PredictQuery {
    top: Option<usize>,
    input: Option<bool>,
}

/// `predict --json` for one picture: `{"predictions": [{"image": ..., "top": [...]}]}`.
pub async fn predict(State(state): Shared, request: Request) -> ApiResult<Json<Value>> {
    let options: PredictQuery = query(request.uri())?;
    let top = options.top.unwrap_or(3);
    let model = model(&state)?;
    let classes = model.run.shape.classes;
    if !(1..=classes).contains(&top) {
        return Err(ApiError::bad_request(format!(
            "top must be between 1 and {classes}, got {top}"
        )));
    }
    let upload = receive(&state, request).await?;
    let input = input(&upload.headers, upload.body, false)?;
    let slot = upload.slot;
    let with_input = options.input.unwrap_or(false);
    let pool_state = state.clone();
    compute_for_request(move |requester| {
        let _slot = slot;
        requester.check()?;
        let pixels = pixels(&pool_state, &model, &input)?;
        requester.check()?;
        let shape = model.run.shape;
        let top = top_classes(
            &model.network,
            &model.run.class_names,
            &pixels,
            shape,
            top,
            &pool_state.device,
        );
        let mut prediction = json!({ "image": "(request body)", "top": top });
        if with_input {
            prediction["input"] = json!(pixels);
        }
        Ok(Json(json!({ "predictions": [prediction] })))
    })
    .await
    .map_err(internal)?
}

async fn inspection(
    state: Arc<AppState>,
    request: Request,
    picture: Option<String>,
) -> ApiResult<Response> {
    let model = model(&state)?;
    let pictures = inspect::pictures(&model.network);
    if let Some(name) = &picture
        && !pictures.contains(name)
    {
        return Err(ApiError::not_found(format!(
            "no picture \"{name}\" for a {} model; there are: {}",
            model.run.config.architecture,
            pictures.join(", ")
        )));
    }
    let upload = receive(&state, request).await?;
    let input = input(&upload.headers, upload.body, true)?;
    let slot = upload.slot;
    let pool_state = state.clone();
    compute_for_request(move |requester| {
        let _slot = slot;
        requester.check()?;
        let pixels = pixels(&pool_state, &model, &input)?;
        requester.check()?;
        let inspection = inspect::inspect(
            &model.network,
            &model.run.class_names,
            &pixels,
            model.run.shape,
            &pool_state.device,
        );
        match picture {
            None => Ok(Json(inspection).into_response()),
            Some(name) => {
                let png = inspect::picture(&inspection, &name)
                    .ok_or_else(|| ApiError::not_found(format!("no picture \"{name}\"")))?
                    .map_err(|e| internal(e.to_string()))?;
                Ok((
                    [
                        (header::CONTENT_TYPE, "image/png"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    png,
                )
                    .into_response())
            }
        }
    })
    .await
    .map_err(internal)?
}

/// Every layer's values for a picture or a test image, as `inspect --json` prints them.
pub async fn inspect(State(state): Shared, request: Request) -> ApiResult<Response> {
    inspection(state, request, None).await
}

/// One of `inspect`'s pictures, as PNG.
pub async fn inspect_picture(
    State(state): Shared,
    Path(picture): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let name = picture.strip_suffix(".png").unwrap_or(&picture).to_string();
    inspection(state, request, Some(name)).await
}

fn parse_index(text: &str) -> ApiResult<usize> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("\"{text}\" is not an image index")))
}

/// One test image: label, pixels and every class's probability.
pub async fn test_item(State(state): Shared, Path(index): Path<String>) -> ApiResult<Json<Value>> {
    let index = parse_index(&index)?;
    let model = model(&state)?;
    let split = test_split(&state, &model)?;
    if index >= split.len() {
        return Err(test_index_error(index, split.len()));
    }
    let device = state.device.clone();
    compute(move || {
        let pixels = split.image(index);
        let label = usize::from(split.labels[index]);
        let top = top_classes(
            &model.network,
            &model.run.class_names,
            pixels,
            model.run.shape,
            model.run.shape.classes,
            &device,
        );
        let predicted = top.first().map(|c| c.class);
        Json(json!({
            "index": index,
            "label": label,
            "label_name": model.run.class_names.get(label),
            "predicted": predicted,
            "correct": predicted == Some(label),
            "rows": split.rows,
            "cols": split.cols,
            "pixels": pixels,
            "top": top,
        }))
    })
    .await
    .map_err(internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsQuery {
    label: Option<usize>,
    predicted: Option<usize>,
    #[serde(default)]
    mistakes: bool,
    limit: Option<usize>,
}

/// Test images of one confusion-matrix cell (`label`, `predicted`, either may be left out), or
/// with `mistakes=true` the wrong ones; most confident first.
pub async fn test_items(State(state): Shared, uri: Uri) -> ApiResult<Json<Value>> {
    let request: ItemsQuery = query(&uri)?;
    let limit = request.limit.unwrap_or(50).min(500);
    let model = model(&state)?;
    let split = test_split(&state, &model)?;
    let results = state.results(&model).await.map_err(ApiError::not_found)?;
    let mut items: Vec<(usize, usize, usize, f64)> = results
        .predictions
        .iter()
        .enumerate()
        .map(|(index, &(predicted, confidence))| {
            (
                index,
                usize::from(split.labels[index]),
                predicted,
                confidence,
            )
        })
        .filter(|&(_, label, predicted, _)| {
            request.label.is_none_or(|l| l == label)
                && request.predicted.is_none_or(|p| p == predicted)
                && (!request.mistakes || label != predicted)
        })
        .collect();
    let total = items.len();
    items.sort_by(|a, b| b.3.total_cmp(&a.3));
    items.truncate(limit);
    let items: Vec<Value> = items
        .into_iter()
        .map(|(index, label, predicted, confidence)| {
            json!({
                "index": index,
                "label": label,
                "predicted": predicted,
                "confidence": confidence,
                "pixels": split.image(index),
            })
        })
        .collect();
    Ok(Json(json!({
        "total": total,
        "rows": split.rows,
        "cols": split.cols,
        "items": items,
    })))
}

/// `evaluate --json` on the test split, for the current model.
pub async fn metrics(State(state): Shared) -> ApiResult<Json<Value>> {
    let model = model(&state)?;
    let results = state.results(&model).await.map_err(ApiError::not_found)?;
    let mut summary =
        serde_json::to_value(&results.evaluation).map_err(|e| internal(e.to_string()))?;
    if let Some(mistakes) = summary.get_mut("mistakes").and_then(|m| m.as_array_mut()) {
        mistakes.truncate(MISTAKES_SHOWN);
    }
    summary["model_version"] = json!(results.version);
    Ok(Json(summary))
}

/// The run's history as `train` last committed it.
pub async fn history(State(state): Shared) -> Json<Value> {
    match state.current() {
        Some(model) => Json(json!({
            "model_version": model.version,
            "completed_epochs": model.run.completed_epochs,
            "epochs": model.run.config.epochs,
            "history": model.run.history,
        })),
        None => Json(json!({
            "model_version": 0,
            "completed_epochs": 0,
            "epochs": null,
            "history": [],
        })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectRequest {
    class: usize,
    image: String,
}

/// Saves a drawing in the collect folder, under its class's folder.
pub async fn collect(State(state): Shared, request: Request) -> ApiResult<Json<Value>> {
    if state.collect.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "collecting is off; start the server with --collect DIR",
        ));
    }
    if content_type(request.headers()) != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON {\"class\": N, \"image\": \"<base64 PNG>\"} with Content-Type: application/json",
        ));
    }
    let upload = receive(&state, request).await?;
    let request: CollectRequest = parse_json(&upload.body)?;
    let model = model(&state)?;
    let names = &model.run.class_names;
    let Some(name) = names.get(request.class) else {
        return Err(ApiError::bad_request(format!(
            "class {} does not exist; the model has classes 0..={}",
            request.class,
            names.len().saturating_sub(1)
        )));
    };
    let folder = folder_of_class(name);
    let bytes = base64_picture(&request.image)?;
    let (slot, pool_state) = (upload.slot, state.clone());
    compute_for_request(move |requester| {
        let _slot = slot;
        requester.check()?;
        let decoded = decode_bytes(&bytes, 1)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
        let mut png = Vec::new();
        decoded
            .picture
            .to_luma8()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| internal(format!("cannot encode the drawing: {e}")))?;
        requester.check()?;
        let collect = pool_state
            .collect
            .as_ref()
            .ok_or_else(|| internal("collecting is off".into()))?;
        let saved = collect.save(&folder, &png)?;
        Ok(Json(json!({
            "saved": saved,
            "class": request.class,
            "folder": folder,
        })))
    })
    .await
    .map_err(internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_with_and_without_data_url() {
        assert_eq!(base64_picture("aGk=").ok(), Some(b"hi".to_vec()));
        assert_eq!(
            base64_picture("data:image/png;base64,aGk=").ok(),
            Some(b"hi".to_vec())
        );
        assert!(base64_picture("%%%").is_err());
    }
}
