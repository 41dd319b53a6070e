//! safetensors with PyTorch's names and layouts, written and read through burn-store's
//! PyTorch adapters: `conv1.weight` `[16, C, 3, 3]`, `dense1.weight` `[128, inputs]` (a
//! `torch.nn.Linear`'s `[out, in]`), ... exactly the `state_dict` of the `torch.nn.Module`
//! shown in the README. The metadata says what the model expects: the architecture, the image
//! shape, the pixel scaling, the class names and the image pipeline.

use std::collections::{BTreeMap, HashMap};

use burn::prelude::Device;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use safetensors::{Dtype, SafeTensors};

use super::Refusal;
use super::weights::{bias_len, layout};
use crate::data::pipeline::Pipeline;
use crate::model::{Architecture, InputShape, Network};

/// Metadata keys.
pub(crate) const ARCHITECTURE: &str = "architecture";
pub(crate) const SHAPE: &str = "input_shape";
pub(crate) const CLASSES: &str = "class_names";
pub(crate) const PIXEL_SCALE: &str = "pixel_scale";
pub(crate) const PIPELINE: &str = "pipeline";
/// What every export's model multiplies raw 0-255 pixels by: this tool's networks read
/// pixels / 255.
pub(crate) const PIXELS_OVER_255: &str = "1/255";

/// What an export records beside the weights.
pub(crate) struct Description<'a> {
    pub shape: InputShape,
    pub class_names: &'a [String],
    pub pipeline: Pipeline,
}

/// The safetensors bytes of `network`, with PyTorch's names and layouts.
pub(crate) fn to_bytes(network: &Network, description: &Description) -> Result<Vec<u8>, String> {
    let shape = description.shape;
    let names = serde_json::to_string(description.class_names).expect("names serialize");
    let pipeline = serde_json::to_string(&description.pipeline).expect("pipelines serialize");
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .metadata("format", "pt")
        .metadata(
            "producer",
            format!("mnist-cnn {}", env!("CARGO_PKG_VERSION")),
        )
        .metadata(ARCHITECTURE, network.architecture().name())
        .metadata(
            SHAPE,
            format!("[{}, {}, {}]", shape.channels, shape.rows, shape.cols),
        )
        .metadata(CLASSES, names)
        .metadata(PIXEL_SCALE, PIXELS_OVER_255)
        .metadata(
            "input",
            "float32 [N, C, H, W], raw pixels 0-255 multiplied by pixel_scale",
        )
        .metadata(
            "output",
            "the softmax of the last layer: a probability per class",
        )
        .metadata(PIPELINE, pipeline);
    let saved = match network {
        Network::Cnn(cnn) => cnn.save_into(&mut store),
        Network::Mlp(mlp) => mlp.save_into(&mut store),
    };
    let bytes = saved
        .and_then(|()| store.get_bytes())
        .map_err(|e| e.to_string())?;
    sorted_header(bytes)
}

/// The same file with its JSON header's keys in sorted order: the safetensors crate writes the
/// metadata in a hash map's random order, and the same model should export to the same bytes.
/// The tensors' data and offsets are untouched.
fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let length = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .filter(|&n| n <= bytes.len() - 8)
        .ok_or("the safetensors writer wrote no header")?;
    // Tensors by name (each its dtype, shape and offsets) and `__metadata__`, all sorted.
    type Header = BTreeMap<String, BTreeMap<String, serde_json::Value>>;
    let header: Header = serde_json::from_slice(&bytes[8..8 + length])
        .map_err(|e| format!("the safetensors writer wrote an unexpected header ({e})"))?;
    let mut sorted = serde_json::to_vec(&header).expect("JSON serializes");
    // Padded with spaces to a multiple of 8 bytes, as the format aligns the data.
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = (sorted.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + length..]);
    Ok(out)
}

/// A safetensors file read: the network and what its metadata says.
pub(crate) struct Read {
    pub network: Network,
    pub shape: InputShape,
    pub class_names: Option<Vec<String>>,
    pub pipeline: Option<Pipeline>,
    /// The metadata's pixel scale, when it has one.
    pub pixel_scale: Option<f64>,
}

/// Reads a safetensors file of one of this tool's architectures with PyTorch's names: this
/// tool's export, or a PyTorch `state_dict` of the README's module (`architecture` then names
/// which, and the images are taken to be 28x28).
pub(crate) fn read(
    bytes: Vec<u8>,
    architecture: Option<Architecture>,
    device: &Device,
) -> Result<Read, Refusal> {
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("not a readable safetensors file ({e})"))?;
    let meta: HashMap<String, String> = metadata.metadata().clone().unwrap_or_default();
    let said = meta
        .get(ARCHITECTURE)
        .map(|name| match name.as_str() {
            "cnn" => Ok(Architecture::Cnn),
            "mlp" => Ok(Architecture::Mlp),
            other => Err(format!(
                "its metadata names the architecture {other:?}, not cnn or mlp"
            )),
        })
        .transpose()?;
    let architecture = match (said, architecture) {
        (Some(said), Some(asked)) if said != asked => {
            return Err(Refusal::NotAsked { found: said, asked });
        }
        (Some(said), _) => said,
        (None, Some(asked)) => asked,
        (None, None) => {
            return Err(Refusal::Unnamed("its metadata"));
        }
    };
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("not a readable safetensors file ({e})"))?;
    let dims_of = |name: &str| tensors.tensor(name).ok().map(|t| t.shape().to_vec());
    let shape = match meta.get(SHAPE) {
        Some(text) => shape_from_metadata(text, dims_of("output.weight"))?,
        None => shape_from_tensors(architecture, &dims_of)?,
    };
    // Every tensor the model has, with PyTorch's shape and as float32; nothing else.
    let expected = layout(architecture, shape);
    let mut names = Vec::new();
    for (name, dims) in &expected {
        let torch_dims = if dims.len() == 2 {
            vec![dims[1], dims[0]]
        } else {
            dims.clone()
        };
        for (suffix, want) in [("weight", torch_dims), ("bias", vec![bias_len(dims)])] {
            let key = format!("{name}.{suffix}");
            let view = tensors
                .tensor(&key)
                .map_err(|_| format!("it has no tensor {key}, which the {architecture} needs"))?;
            if view.dtype() != Dtype::F32 || view.shape() != want.as_slice() {
                return Err(Refusal::Damaged(format!(
                    "its {key} is {:?} {:?}, the {architecture} needs F32 {want:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            names.push(key);
        }
    }
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|n| !names.iter().any(|k| k == n))
    {
        return Err(Refusal::Foreign(format!(
            "it holds a tensor {extra} that the {architecture} does not have"
        )));
    }
    let mut network = Network::new(architecture, shape, device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true);
    let loaded = match &mut network {
        Network::Cnn(cnn) => cnn.load_from(&mut store),
        Network::Mlp(mlp) => mlp.load_from(&mut store),
    };
    loaded.map_err(|e| format!("its tensors cannot be loaded ({e})"))?;
    let class_names = meta
        .get(CLASSES)
        .map(|text| serde_json::from_str::<Vec<String>>(text))
        .transpose()
        .map_err(|e| format!("its metadata's {CLASSES} is not a list of names ({e})"))?;
    if let Some(names) = &class_names
        && names.len() != shape.classes
    {
        return Err(Refusal::Damaged(format!(
            "its metadata names {} classes, its output layer has {}",
            names.len(),
            shape.classes
        )));
    }
    let pipeline = meta
        .get(PIPELINE)
        .map(|text| serde_json::from_str::<Pipeline>(text))
        .transpose()
        .map_err(|e| format!("its metadata's {PIPELINE} is not an image pipeline ({e})"))?;
    let pixel_scale = meta
        .get(PIXEL_SCALE)
        .map(|text| {
            parse_scale(text).ok_or_else(|| {
                format!("its metadata's {PIXEL_SCALE} {text:?} is not a number or a fraction")
            })
        })
        .transpose()?;
    Ok(Read {
        network,
        shape,
        class_names,
        pipeline,
        pixel_scale,
    })
}

/// `"[C, H, W]"`, with the classes from the output layer.
fn shape_from_metadata(text: &str, output: Option<Vec<usize>>) -> Result<InputShape, String> {
    let dims: Vec<usize> = serde_json::from_str(text)
        .map_err(|_| format!("its metadata's {SHAPE} {text:?} is not [channels, rows, cols]"))?;
    let [channels, rows, cols] = dims[..] else {
        return Err(format!(
            "its metadata's {SHAPE} {text:?} is not [channels, rows, cols]"
        ));
    };
    let classes = output
        .and_then(|dims| dims.first().copied())
        .ok_or("it has no tensor output.weight")?;
    let side = crate::data::idx::MAX_IMAGE_SIDE;
    if rows > side || cols > side {
        return Err(format!(
            "its images of {cols}x{rows} are larger than {side} pixels a side"
        ));
    }
    Ok(InputShape {
        rows,
        cols,
        classes,
        channels,
    })
}

/// Without metadata: 28x28 images, the channels of the first layer, the classes of the last.
fn shape_from_tensors(
    architecture: Architecture,
    dims_of: &dyn Fn(&str) -> Option<Vec<usize>>,
) -> Result<InputShape, String> {
    let first = match architecture {
        Architecture::Cnn => dims_of("conv1.weight").and_then(|d| d.get(1).copied()),
        Architecture::Mlp => dims_of("dense1.weight")
            .and_then(|d| d.get(1).copied())
            .map(|inputs| inputs / (28 * 28)),
    };
    let classes = dims_of("output.weight").and_then(|d| d.first().copied());
    match (first, classes) {
        (Some(channels), Some(classes)) => Ok(InputShape {
            rows: 28,
            cols: 28,
            classes,
            channels,
        }),
        _ => Err(format!(
            "it lacks the first or last layer of a {architecture}"
        )),
    }
}

/// `"1/255"`, `"0.5"`, `"1"`.
pub(crate) fn parse_scale(text: &str) -> Option<f64> {
    let value = match text.split_once('/') {
        Some((numerator, denominator)) => {
            numerator.trim().parse::<f64>().ok()? / denominator.trim().parse::<f64>().ok()?
        }
        None => text.trim().parse::<f64>().ok()?,
    };
    (value.is_finite() && value > 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse() {
        assert_eq!(parse_scale("1/255"), Some(1.0 / 255.0));
        assert_eq!(parse_scale(" 1 "), Some(1.0));
        assert_eq!(parse_scale("0.5"), Some(0.5));
        for bad in ["0", "-1", "1/0", "x", "", "inf", "NaN"] {
            assert_eq!(parse_scale(bad), None, "{bad}");
        }
    }
}
