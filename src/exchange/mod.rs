//! Models in and out: `import-model` turns a Keras model (`.keras`, legacy `.h5`,
//! `.weights.h5`) or a safetensors file into an ordinary run directory, and `export` writes a
//! run's network as ONNX or as safetensors with PyTorch's names and layouts.
//!
//! Every import goes through [`weights::ModelWeights`], this tool's layouts as plain arrays,
//! and ends as a checkpoint committed like a training epoch's ([`crate::run::checkpoint`]), so
//! `evaluate`, `predict`, `inspect`, `serve`, `bench` and `train --init-from` read it as any
//! run. This tool feeds every network pixels / 255; what the imported model expected instead
//! (raw pixels, a `Rescaling` layer) is folded into its first layer's weights, and recorded
//! in `run.json`'s `imported` entry with the source file's name, format and SHA-256.

mod keras;
pub mod onnx;
mod safetensors;
mod weights;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::{self, BackendKind};
use crate::data::pipeline::Pipeline;
use crate::error::{Error, Result};
use crate::fsutil::{open_regular, write_atomically};
use crate::model::{Architecture, InputShape, Network};
use crate::run::checkpoint::{self, RunLock};
use crate::run::provenance::{Provenance, Rescaling};
use crate::run::{DataInfo, RUN_FILE, RunInfo, TrainConfig, TrainedRun, burn_version, now_unix};
use crate::train::Adam;
use weights::ModelWeights;

/// The largest model file read: the tool's largest networks (128x128 colour images) hold a
/// few million parameters, tens of MB with Keras's optimizer state.
pub const MAX_MODEL_FILE_BYTES: u64 = 1 << 30;

/// Why a model file cannot be imported.
pub(crate) enum Refusal {
    /// Damaged, truncated, or not what it claims to be.
    Damaged(String),
    /// A readable model of another architecture than this tool's.
    Foreign(String),
    /// One of this tool's architectures, but not the one asked for.
    NotAsked {
        found: Architecture,
        asked: Architecture,
    },
    /// A file that does not say its architecture, and none was named.
    Unnamed(&'static str),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Damaged(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Damaged(reason.to_string())
    }
}

impl Refusal {
    fn into_error(self, path: &Path) -> Error {
        let path = path.to_path_buf();
        match self {
            Refusal::Damaged(reason) => Error::ModelFile { path, reason },
            Refusal::Foreign(reason) => Error::ForeignModel { path, reason },
            Refusal::NotAsked { found, asked } => Error::ModelArchitecture {
                path,
                found: found.name(),
                asked: asked.name(),
            },
            Refusal::Unnamed(what) => Error::ModelFile {
                path,
                reason: format!("{what} does not say its architecture (cnn or mlp)"),
            },
        }
    }
}

/// How to read a model file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The architecture: required for a file of weights alone, checked against the others.
    pub architecture: Option<Architecture>,
    /// What the source model multiplies raw 0-255 pixels by before its first layer: 1 for the
    /// tutorial's raw pixels, 1/255 for pixels in [0, 1]. `None`: what the file says, else 1
    /// for Keras files (the tutorial) and 1/255 for safetensors (the README's PyTorch module).
    pub pixel_scale: Option<f64>,
}

/// Imports the model in `source` as a run in `out`, which must not hold a run already.
pub fn import_model(source: &Path, out: &Path, options: &ImportOptions) -> Result<RunInfo> {
    let bytes = read_model_file(source)?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let device = BackendKind::Flex.device();
    let imported = read_model(bytes, options, &device).map_err(|r| r.into_error(source))?;
    let Imported {
        network,
        shape,
        class_names,
        pipeline,
        provenance,
    } = imported;
    let provenance = Provenance {
        file: source
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        sha256,
        ..provenance
    };
    if out.join(RUN_FILE).exists() {
        return Err(Error::RunExists {
            dir: out.to_path_buf(),
        });
    }
    let _lock = RunLock::acquire(out)?;
    let mut run = RunInfo {
        config: TrainConfig {
            architecture: network.architecture(),
            epochs: 0,
            ..TrainConfig::default()
        },
        shape,
        class_names: class_names
            .unwrap_or_else(|| (0..shape.classes).map(|c| c.to_string()).collect()),
        parameters: burn::module::Module::num_params(&network),
        optimizer: "none (imported)".into(),
        loss: "categorical_crossentropy".into(),
        threads: backend::current_threads(),
        data: DataInfo {
            dir: PathBuf::new(),
            canonical_mnist: false,
            images_md5: String::new(),
            labels_md5: String::new(),
            train_images: 0,
            validation_images: 0,
        },
        completed_epochs: 0,
        train_seconds: 0.0,
        peak_rss_mb: None,
        burn_version: burn_version().into(),
        mnist_cnn_version: env!("CARGO_PKG_VERSION").into(),
        history: Vec::new(),
        checkpoint: None,
        pipeline,
        validation_from: None,
        best: None,
        restored_best_epoch: None,
        started_at: Some(now_unix()),
        weight_histograms: Vec::new(),
        imported: Some(provenance),
    };
    let optimizer_state = Adam::new(&device)
        .to_bytes()
        .map_err(|e| Error::Serialize {
            what: "optimizer state",
            reason: e.to_string(),
        })?;
    checkpoint::commit(out, &network, &optimizer_state, &mut run)?;
    Ok(run)
}

/// What `import-model` makes of a model file's bytes, without writing anything: the
/// architecture and image shape of the network it would import, or why it refuses them.
pub fn read_model_bytes(
    bytes: Vec<u8>,
    options: &ImportOptions,
) -> std::result::Result<(Architecture, InputShape), String> {
    match read_model(bytes, options, &BackendKind::Flex.device()) {
        Ok(imported) => Ok((imported.network.architecture(), imported.shape)),
        Err(refusal) => Err(refusal.into_error(Path::new("")).to_string()),
    }
}

/// A model file's bytes, refused beyond [`MAX_MODEL_FILE_BYTES`].
fn read_model_file(path: &Path) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > MAX_MODEL_FILE_BYTES {
        return Err(Error::ModelFile {
            path: path.to_path_buf(),
            reason: format!(
                "{size} bytes, more than any model of this tool needs ({MAX_MODEL_FILE_BYTES})"
            ),
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_MODEL_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// What an import produced, before it is written.
struct Imported {
    network: Network,
    shape: InputShape,
    class_names: Option<Vec<String>>,
    pipeline: Option<Pipeline>,
    /// Without the file's name and checksum.
    provenance: Provenance,
}

fn read_model(
    bytes: Vec<u8>,
    options: &ImportOptions,
    device: &burn::prelude::Device,
) -> std::result::Result<Imported, Refusal> {
    if bytes.starts_with(keras::HDF5_SIGNATURE) || bytes.starts_with(b"PK\x03\x04") {
        let model = keras::read(bytes, options.architecture)?;
        let pixel_scale = options.pixel_scale.unwrap_or(1.0);
        let shape = model.weights.shape;
        let weights = fold_input_scaling(model.weights, pixel_scale, model.rescaling)?;
        return Ok(Imported {
            network: weights.into_network(device),
            shape,
            class_names: None,
            pipeline: None,
            provenance: Provenance {
                file: String::new(),
                format: model.format.name().into(),
                sha256: String::new(),
                pixel_scale,
                rescaling: model.rescaling,
                written_by: model.keras_version.map(|v| format!("Keras {v}")),
            },
        });
    }
    if looks_like_safetensors(&bytes) {
        let read = safetensors::read(bytes, options.architecture, device)?;
        let pixel_scale = options
            .pixel_scale
            .or(read.pixel_scale)
            .unwrap_or(1.0 / 255.0);
        let shape = read.shape;
        shape
            .check(read.network.architecture())
            .map_err(|e| Refusal::Foreign(format!("its model cannot be used: {e}")))?;
        let network = if (255.0 * pixel_scale) as f32 == 1.0 {
            read.network
        } else {
            fold_input_scaling(ModelWeights::of(&read.network, shape), pixel_scale, None)?
                .into_network(device)
        };
        return Ok(Imported {
            network,
            shape,
            class_names: read.class_names,
            pipeline: read.pipeline,
            provenance: Provenance {
                file: String::new(),
                format: "safetensors".into(),
                sha256: String::new(),
                pixel_scale,
                rescaling: None,
                written_by: None,
            },
        });
    }
    Err(Refusal::Damaged(
        "not a Keras model (.keras, .h5, .weights.h5) or a safetensors file".into(),
    ))
}

/// safetensors: an 8-byte little-endian header length, then a JSON header.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[8] == b'{'
}

/// Folds what the model does to raw pixels before its first layer (`pixel_scale`, then the
/// `Rescaling` layer) into that layer, for inputs of pixels / 255.
fn fold_input_scaling(
    mut weights: ModelWeights,
    pixel_scale: f64,
    rescaling: Option<Rescaling>,
) -> std::result::Result<ModelWeights, Refusal> {
    let Rescaling { scale, offset } = rescaling.unwrap_or(Rescaling {
        scale: 1.0,
        offset: 0.0,
    });
    let factor = (255.0 * pixel_scale * scale) as f32;
    if !factor.is_finite() || factor == 0.0 {
        return Err(Refusal::Foreign(format!(
            "its input scaling ({pixel_scale} x {scale}) cannot be used"
        )));
    }
    let first = &mut weights.layers[0];
    if offset != 0.0 {
        if weights.architecture == Architecture::Cnn {
            // The zero padding of the first convolution comes after the offset.
            return Err(Refusal::Foreign(format!(
                "its Rescaling layer adds {offset}, which cannot be folded into a padded convolution"
            )));
        }
        let outputs = first.bias.len();
        for (index, value) in first.weight.iter().enumerate() {
            first.bias[index % outputs] += offset as f32 * value;
        }
    }
    if factor != 1.0 {
        first.weight.iter_mut().for_each(|w| *w *= factor);
    }
    Ok(weights)
}

/// The file formats `export` writes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ExportFormat {
    /// ONNX (opset 17): raw pixels in, probabilities out, for ONNX Runtime and others
    Onnx,
    /// safetensors with PyTorch's names and layouts, for a torch.nn.Module's load_state_dict
    Safetensors,
}

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub format: ExportFormat,
    pub path: PathBuf,
    pub bytes: u64,
    pub architecture: Architecture,
    pub shape: InputShape,
    pub class_names: Vec<String>,
}

/// Writes the network of the run in `model_dir` to `output` as `format`.
pub fn export(model_dir: &Path, format: ExportFormat, output: &Path) -> Result<Exported> {
    let run = TrainedRun::open(model_dir, &BackendKind::Flex.device())?;
    let info = &run.info;
    let pipeline = info.pipeline();
    let bytes = match format {
        ExportFormat::Onnx => {
            let weights = ModelWeights::of(&run.network, info.shape);
            let mut metadata = vec![
                ("architecture", info.config.architecture.name().to_string()),
                ("class_names", json(&info.class_names)),
                ("pipeline", pipeline.name()),
                ("pipeline_config", json(&pipeline)),
                (
                    "input",
                    "float32 [N, C, H, W]: raw pixel values 0-255".to_string(),
                ),
                (
                    "output",
                    "float32 [N, classes]: the probability of each class".to_string(),
                ),
            ];
            if let Some(source) = &info.imported {
                metadata.push((
                    "imported_from",
                    format!("{} ({})", source.file, source.format),
                ));
            }
            onnx::model_bytes(&weights, &metadata)
        }
        ExportFormat::Safetensors => safetensors::to_bytes(
            &run.network,
            &safetensors::Description {
                shape: info.shape,
                class_names: &info.class_names,
                pipeline,
            },
        )
        .map_err(|reason| Error::Serialize {
            what: "model as safetensors",
            reason,
        })?,
    };
    write_atomically(output, &bytes)?;
    Ok(Exported {
        format,
        path: output.to_path_buf(),
        bytes: bytes.len() as u64,
        architecture: info.config.architecture,
        shape: info.shape,
        class_names: info.class_names.clone(),
    })
}

/// Parses a pixel scale as written on a command line or in metadata: `1`, `1/255`, `0.5`.
pub fn parse_pixel_scale(text: &str) -> Option<f64> {
    safetensors::parse_scale(text)
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("names and pipelines serialize")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
