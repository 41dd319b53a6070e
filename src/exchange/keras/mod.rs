//! Keras models in: a Keras 3 `.keras` file (a zip of `config.json`, `metadata.json` and
//! `model.weights.h5`), a legacy `.h5` full model (the configuration in the root attribute
//! `model_config`, the weights under `model_weights/`), or a `.weights.h5` file of weights
//! alone, whose architecture the caller names.
//!
//! The architecture is read from the configuration and checked against this tool's
//! ([`config::check`]). The weights are then put into this tool's layouts: Keras's
//! convolution kernels `(kh, kw, in, out)` become burn's `[out, in, kh, kw]`; dense kernels
//! `(in, out)` are burn's layout already, but Keras flattens feature maps as `(h, w, c)` and
//! this tool as `(c, h, w)`, so the first dense layer's rows are permuted. What the model
//! expects of its input (raw 0-255 pixels, a `Rescaling` layer) is folded into the first
//! layer, since this tool feeds every network pixels / 255.

pub(crate) mod config;
mod h5;

use std::io::{Cursor, Read};

use super::Refusal;
use super::weights::{Layer, ModelWeights, bias_len, layout, parameter_count};
use crate::model::{Architecture, InputShape};
use crate::run::provenance::Rescaling;

pub(crate) use h5::SIGNATURE as HDF5_SIGNATURE;

/// The largest `config.json` or `metadata.json` read from a `.keras` file; Keras writes a few
/// KiB.
const MAX_JSON_BYTES: u64 = 1 << 20;
/// Room in an HDF5 file beyond its weights: headers, names, attributes.
const HDF5_OVERHEAD: u64 = 4 << 20;

/// Which of Keras's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KerasFormat {
    /// Keras 3's `.keras`.
    Keras,
    /// A legacy `.h5` full model.
    LegacyH5,
    /// A `.weights.h5` file (or any HDF5 file of weights in Keras 3's layout).
    Weights,
}

impl KerasFormat {
    pub fn name(self) -> &'static str {
        match self {
            KerasFormat::Keras => "keras",
            KerasFormat::LegacyH5 => "keras-h5",
            KerasFormat::Weights => "keras-weights",
        }
    }
}

/// A Keras model read into this tool's layouts, before the input scaling is folded in.
pub(crate) struct KerasModel {
    pub format: KerasFormat,
    pub weights: ModelWeights,
    pub rescaling: Option<Rescaling>,
    /// The Keras version that saved it, when the file says.
    pub keras_version: Option<String>,
}

/// Reads a Keras file's bytes. `architecture` is required for a file of weights alone, and
/// checked against the configuration of the others.
pub(crate) fn read(
    bytes: Vec<u8>,
    architecture: Option<Architecture>,
) -> Result<KerasModel, Refusal> {
    if bytes.starts_with(h5::SIGNATURE) {
        read_hdf5(bytes, architecture)
    } else {
        read_keras_zip(bytes, architecture)
    }
}

/// A `.keras` zip: `config.json` first, so the weights' size can be bounded by the model it
/// describes.
fn read_keras_zip(
    bytes: Vec<u8>,
    architecture: Option<Architecture>,
) -> Result<KerasModel, Refusal> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable .keras (zip) file ({e})"))?;
    let config_json = entry(&mut archive, "config.json", MAX_JSON_BYTES)?;
    let model = config::parse(&config_json)?;
    let (found, classes) = config::check(&model).map_err(foreign)?;
    let expected = expect_architecture(architecture, found)?;
    let shape = input_shape(&model, expected, classes)?;
    let keras_version = entry(&mut archive, "metadata.json", MAX_JSON_BYTES)
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|meta| meta["keras_version"].as_str().map(str::to_string));
    // The weights, and Adam's two moments of each when the file keeps the optimizer.
    let limit = 4 * 4 * parameter_count(expected, shape) as u64 + HDF5_OVERHEAD;
    let weights_h5 = entry(&mut archive, "model.weights.h5", limit)?;
    let file = h5::H5::open(weights_h5, largest_layer_bytes(expected, shape))?;
    let weights = read_keras3_weights(&file, expected, shape)?;
    Ok(KerasModel {
        format: KerasFormat::Keras,
        weights,
        rescaling: model.rescaling,
        keras_version,
    })
}

/// One file of a `.keras` zip, refused beyond `limit` bytes (whatever its header declares).
fn entry(
    archive: &mut zip::ZipArchive<Cursor<Vec<u8>>>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let file = archive
        .by_name(name)
        .map_err(|e| format!("the .keras file has no {name} ({e})"))?;
    // A compressed file inflates at most DEFLATE's ratio of 1032 to 1.
    let limit = limit.min(file.compressed_size().saturating_mul(1032));
    if file.size() > limit {
        return Err(format!(
            "its {name} declares {} bytes, more than its model can need ({limit})",
            file.size()
        ));
    }
    let mut bytes = Vec::with_capacity(file.size() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("its {name} cannot be read ({e})"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("its {name} holds more than {limit} bytes"));
    }
    Ok(bytes)
}

/// A legacy `.h5` model (with `model_config`) or a `.weights.h5` file.
fn read_hdf5(bytes: Vec<u8>, architecture: Option<Architecture>) -> Result<KerasModel, Refusal> {
    let size = bytes.len();
    // No dataset can hold more than the file does: Keras does not compress weights.
    let file = h5::H5::open(bytes, size)?;
    let Some(model_config) = file.string_attribute("/", "model_config")? else {
        let Some(architecture) = architecture else {
            return Err(Refusal::Unnamed("a file of weights alone"));
        };
        if !file.has_group("layers") {
            return Err("no Keras model configuration (model_config) and no Keras 3 weights (layers/) in this HDF5 file".into());
        }
        let weights = read_weights_only(&file, architecture)?;
        return Ok(KerasModel {
            format: KerasFormat::Weights,
            weights,
            rescaling: None,
            keras_version: None,
        });
    };
    let model = config::parse(model_config.as_bytes())?;
    let (found, classes) = config::check(&model).map_err(foreign)?;
    let expected = expect_architecture(architecture, found)?;
    let shape = input_shape(&model, expected, classes)?;
    let keras_version = file.string_attribute("/", "keras_version")?;
    let weights = read_legacy_weights(&file, &model, expected, shape)?;
    Ok(KerasModel {
        format: KerasFormat::LegacyH5,
        weights,
        rescaling: model.rescaling,
        keras_version,
    })
}

fn foreign(reason: String) -> Refusal {
    Refusal::Foreign(reason)
}

fn expect_architecture(
    asked: Option<Architecture>,
    found: Architecture,
) -> Result<Architecture, Refusal> {
    match asked {
        Some(asked) if asked != found => Err(Refusal::NotAsked { found, asked }),
        _ => Ok(found),
    }
}

/// The image size the model was built for, with the number of classes of its output.
fn input_shape(
    model: &config::ModelConfig,
    architecture: Architecture,
    classes: usize,
) -> Result<InputShape, Refusal> {
    let [rows, cols, channels] = model.input.unwrap_or([28, 28, 1]);
    let shape = InputShape {
        rows,
        cols,
        classes,
        channels,
    };
    let side = crate::data::idx::MAX_IMAGE_SIDE;
    if rows > side || cols > side {
        return Err(foreign(format!(
            "the model takes {cols}x{rows} images, larger than {side} pixels a side"
        )));
    }
    shape
        .check(architecture)
        .map_err(|e| foreign(format!("the model's input cannot be used: {e}")))?;
    Ok(shape)
}

fn largest_layer_bytes(architecture: Architecture, shape: InputShape) -> usize {
    layout(architecture, shape)
        .iter()
        .map(|(_, dims)| 4 * dims.iter().product::<usize>())
        .max()
        .unwrap_or(0)
}

/// Keras 3's layout (`.keras`, `.weights.h5`): `layers/<key>/vars/0` the kernel, `vars/1` the
/// bias, keys as [`config::weight_keys`].
fn read_keras3_weights(
    file: &h5::H5,
    architecture: Architecture,
    shape: InputShape,
) -> Result<ModelWeights, Refusal> {
    let keys = config::weight_keys(architecture);
    read_layers(architecture, shape, |index, keras_dims, bias| {
        let key = keys[index];
        file.read_f32(
            &format!("layers/{key}/vars/{}", usize::from(bias)),
            keras_dims,
        )
    })
}

fn read_weights_only(file: &h5::H5, architecture: Architecture) -> Result<ModelWeights, Refusal> {
    // A file of weights does not say the image size: the tutorial's 28x28, with the channels
    // and classes its first and last layers have.
    let probe = |key: &str| file.dims(&format!("layers/{key}/vars/0"));
    let keys = config::weight_keys(architecture);
    let first = probe(keys[0]).ok_or_else(|| format!("no weights at layers/{}/vars/0", keys[0]))?;
    let last = probe(keys[keys.len() - 1])
        .ok_or_else(|| format!("no weights at layers/{}/vars/0", keys[keys.len() - 1]))?;
    let channels = match architecture {
        Architecture::Cnn => first.get(2).copied().unwrap_or(0),
        Architecture::Mlp => first.first().copied().unwrap_or(0) / (28 * 28),
    };
    let shape = InputShape {
        rows: 28,
        cols: 28,
        classes: last.get(1).copied().unwrap_or(0),
        channels,
    };
    shape
        .check(architecture)
        .map_err(|e| format!("its weights do not fit a {architecture} for 28x28 images: {e}"))?;
    read_keras3_weights(file, architecture, shape)
}

/// The legacy layout: `model_weights/<layer name>/` with the attribute `weight_names` naming
/// its kernel and bias.
fn read_legacy_weights(
    file: &h5::H5,
    model: &config::ModelConfig,
    architecture: Architecture,
    shape: InputShape,
) -> Result<ModelWeights, Refusal> {
    let layers = config::weighted_layers(model);
    read_layers(architecture, shape, |index, keras_dims, bias| {
        let name = &layers[index].name;
        let group = format!("model_weights/{name}");
        let names = file
            .strings_attribute(&group, "weight_names")?
            .ok_or_else(|| format!("{group} does not name its weights"))?;
        let wanted = if bias { "bias" } else { "kernel" };
        let weight = names
            .iter()
            .find(|n| n.trim_end_matches(":0").rsplit('/').next() == Some(wanted))
            .ok_or_else(|| format!("{group} has no {wanted}"))?;
        file.read_f32(&format!("{group}/{weight}"), keras_dims)
    })
}

/// Reads every layer of `architecture` for `shape` through `read(layer index, Keras's
/// dimensions, is the bias)`, and puts each into burn's layout.
fn read_layers(
    architecture: Architecture,
    shape: InputShape,
    mut read: impl FnMut(usize, &[usize], bool) -> Result<Vec<f32>, String>,
) -> Result<ModelWeights, Refusal> {
    let mut layers = Vec::new();
    for (index, (name, dims)) in layout(architecture, shape).into_iter().enumerate() {
        let weight = if dims.len() == 4 {
            // burn [out, in, kh, kw] <- Keras (kh, kw, in, out)
            let keras = [dims[2], dims[3], dims[1], dims[0]];
            conv_to_burn(&read(index, &keras, false)?, &keras)
        } else {
            read(index, &dims, false)?
        };
        let bias = read(index, &[bias_len(&dims)], true)?;
        layers.push(Layer {
            name,
            dims,
            weight,
            bias,
        });
    }
    let mut weights = ModelWeights {
        architecture,
        shape,
        layers,
    };
    // Keras flattens (h, w, c), this tool (c, h, w).
    let (rows, cols, channels) = match architecture {
        Architecture::Cnn => (shape.rows / 4, shape.cols / 4, 32),
        Architecture::Mlp => (shape.rows, shape.cols, shape.channels),
    };
    let first_dense = &mut weights.layers[if architecture == Architecture::Cnn {
        2
    } else {
        0
    }];
    first_dense.weight = permute_flattened_rows(&first_dense.weight, rows, cols, channels);
    weights.check()?;
    Ok(weights)
}

/// `(kh, kw, in, out)` -> `[out, in, kh, kw]`.
fn conv_to_burn(kernel: &[f32], keras: &[usize; 4]) -> Vec<f32> {
    let [kh, kw, inputs, outputs] = *keras;
    let mut out = vec![0f32; kernel.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..inputs {
                for o in 0..outputs {
                    out[((o * inputs + i) * kh + y) * kw + x] =
                        kernel[((y * kw + x) * inputs + i) * outputs + o];
                }
            }
        }
    }
    out
}

/// A dense kernel whose rows follow Keras's `(h, w, c)` flattening, with its rows put in this
/// tool's `(c, h, w)` order.
fn permute_flattened_rows(weight: &[f32], rows: usize, cols: usize, channels: usize) -> Vec<f32> {
    let inputs = rows * cols * channels;
    let outputs = weight.len() / inputs.max(1);
    let mut out = vec![0f32; weight.len()];
    for y in 0..rows {
        for x in 0..cols {
            for c in 0..channels {
                let keras_row = (y * cols + x) * channels + c;
                let our_row = (c * rows + y) * cols + x;
                out[our_row * outputs..(our_row + 1) * outputs]
                    .copy_from_slice(&weight[keras_row * outputs..(keras_row + 1) * outputs]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_and_flattened_rows_are_reordered() {
        // Keras kernel (1, 2, 2, 3): value = 100*x + 10*in + out.
        let keras: Vec<f32> = (0..2)
            .flat_map(|x| {
                (0..2).flat_map(move |i| (0..3).map(move |o| (100 * x + 10 * i + o) as f32))
            })
            .collect();
        let burn = conv_to_burn(&keras, &[1, 2, 2, 3]);
        // burn [out, in, kh, kw] = [3, 2, 1, 2]: element (o=2, i=1, y=0, x=1), at
        // ((2 * 2 + 1) * 1 + 0) * 2 + 1 = 11, is 100 * x + 10 * i + o.
        assert_eq!(burn[11], 112.0);
        assert_eq!(burn[0], 0.0);
        // 2x1 pixels of 2 channels, 1 output: Keras rows (h, w, c) -> ours (c, h, w).
        let keras_rows = [0.0, 1.0, 10.0, 11.0]; // (y0,c0) (y0,c1) (y1,c0) (y1,c1)
        assert_eq!(
            permute_flattened_rows(&keras_rows, 2, 1, 2),
            vec![0.0, 10.0, 1.0, 11.0]
        );
    }
}
