//! Where the weights of an imported run came from: `run.json`'s `imported` entry, written by
//! `import-model` (see [`crate::exchange`]).

use serde::{Deserialize, Serialize};

/// The file a run's weights were imported from, and what its model expected as input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The source file's name, without its folder.
    pub file: String,
    /// `keras` (a Keras 3 `.keras` file), `keras-h5` (a legacy `.h5` model), `keras-weights`
    /// (a `.weights.h5` file) or `safetensors` (this tool's export).
    pub format: String,
    /// SHA-256 of the source file, hex.
    pub sha256: String,
    /// What the source model multiplies raw 0-255 pixels by before its first layer: 1 for the
    /// tutorial's raw pixels, 1/255 for pixels in [0, 1]. A `Rescaling` layer of the model is
    /// in `rescaling`, not here. Both are folded into the first layer's weights on import, so
    /// every command feeds the run as it feeds its own (pixels / 255).
    pub pixel_scale: f64,
    /// The `Rescaling` layer the source model starts with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescaling: Option<Rescaling>,
    /// The version of the framework that wrote the file, when the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

/// Keras's `Rescaling(scale, offset)`: `x * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rescaling {
    pub scale: f64,
    pub offset: f64,
}
