//! Looking inside a trained network: the activations of every layer for one image, the first
//! convolution's kernels, and pictures of them (`mnist-cnn inspect`, and the `serve` page).

use std::path::{Path, PathBuf};

use burn::backend::ops::ConvOptions;
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::conv2d;
use serde::Serialize;

use crate::data::batch::single_image_tensor;
use crate::error::Result;
use crate::model::{Activation, Architecture, InputShape, Network, Op};
use crate::plot::layers::{
    MapsView, dense_strips, feature_grid, kernel_grid, probability_bars, write_png,
};
use crate::plot::picture::input_picture;
use crate::plot::{HeatmapOptions, heatmap};
use crate::predict::ClassProbability;

/// The values of one layer, row-major in `shape` (channels first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    /// Keras's name of the layer, as `model.summary()` lists it ("conv2d", "dense_1", ...),
    /// with "/kernel" or "/bias" for weights.
    pub name: String,
    pub description: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Everything the network computes for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    pub architecture: Architecture,
    pub rows: usize,
    pub cols: usize,
    /// 1 for grayscale, 3 for colour.
    pub channels: usize,
    pub class_names: Vec<String>,
    /// The pixels the network reads, 0-255, row-major, `channels` interleaved bytes a pixel.
    pub input: Vec<u8>,
    /// Weights and activations in the order they are computed.
    pub layers: Vec<Layer>,
    /// The softmax output, one probability per class.
    pub probabilities: Vec<f32>,
    /// All classes, most probable first.
    pub top: Vec<ClassProbability>,
}

impl Inspection {
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|layer| layer.name == name)
    }
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

fn layer<const D: usize>(name: &str, description: &str, tensor: Tensor<D>) -> Layer {
    let dims = tensor.dims();
    // Drop the batch dimension of activations (always 1 here).
    let shape = if name.contains('/') {
        dims.to_vec()
    } else {
        dims[1..].to_vec()
    };
    Layer {
        name: name.into(),
        description: description.into(),
        shape,
        values: values(tensor),
    }
}

const KERNELS_DESCRIPTION: &str = "of the first convolution";
const DENSE_DESCRIPTION: &str = "dense layer after ReLU";

/// "", "second ", "third ", ...: how the descriptions count layers of a kind after the first.
fn ordinal(index: usize) -> String {
    match index {
        0 => String::new(),
        1 => "second ".into(),
        2 => "third ".into(),
        n => format!("{}th ", n + 1),
    }
}

/// Runs `pixels` (one image of `shape`, `shape.channels` interleaved bytes a pixel, 0-255)
/// through `network` layer by layer ([`Network::layers`]) and keeps every layer's output: the
/// first convolution's kernels, each convolution block's feature maps before and after pooling,
/// each dense layer's activations and the probabilities. Pooled maps and probabilities are the
/// network's own forward pass (the fused kernels); the maps before pooling, which the fused
/// kernel never stores, come from burn's `conv2d` and `relu` with the same weights.
pub fn inspect(
    network: &Network,
    class_names: &[String],
    pixels: &[u8],
    shape: InputShape,
    device: &Device,
) -> Inspection {
    let mut x = Activation::Maps(single_image_tensor(
        pixels,
        shape.rows,
        shape.cols,
        shape.channels,
        device,
    ));
    let mut layers = Vec::new();
    let mut probabilities = Vec::new();
    let (mut blocks, mut hidden) = (0, 0);
    for step in network.layers() {
        if let Op::ConvBlock(conv) = step.op {
            let weight = conv.weight.val();
            let bias = conv.bias.as_ref().map_or_else(
                || Tensor::<1>::zeros([weight.dims()[0]], device),
                |b| b.val(),
            );
            if layers.is_empty() {
                let [filters, channels, kh, kw] = weight.dims();
                layers.push(Layer {
                    name: format!("{}/kernel", step.name),
                    description: format!(
                        "the {filters} learned {kh}x{kw} kernels {KERNELS_DESCRIPTION}"
                    ),
                    shape: vec![filters, channels * kh, kw],
                    values: values(weight.clone()),
                });
                layers.push(layer(
                    &format!("{}/bias", step.name),
                    "their biases",
                    bias.clone(),
                ));
            }
            let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let maps = relu(conv2d(x.clone().into_maps(), weight, Some(bias), same));
            let description = format!(
                "feature maps after the {}convolution and ReLU",
                ordinal(blocks)
            );
            layers.push(layer(
                &step.name,
                description.replace("the conv", "conv").as_str(),
                maps,
            ));
        }
        x = step.forward(x);
        match (step.op, &x) {
            (Op::ConvBlock(_), Activation::Maps(pooled)) => {
                let description = format!("after the {}2x2 max pooling", ordinal(blocks));
                layers.push(layer(
                    step.pooling.as_deref().unwrap_or(&step.name),
                    description.replace("the 2x2", "2x2").as_str(),
                    pooled.clone(),
                ));
                blocks += 1;
            }
            (Op::Dense(_, true), Activation::Features(activations)) => {
                let description = format!("{}{DENSE_DESCRIPTION}", ordinal(hidden));
                layers.push(layer(&step.name, &description, activations.clone()));
                hidden += 1;
            }
            (Op::Dense(_, false), Activation::Features(logits)) => {
                probabilities = values(softmax(logits.clone(), 1));
                layers.push(Layer {
                    name: step.name.clone(),
                    description: "softmax: one probability per class".into(),
                    shape: vec![probabilities.len()],
                    values: probabilities.clone(),
                });
            }
            _ => {}
        }
    }
    let top = crate::predict::rank(&probabilities, class_names);
    Inspection {
        architecture: network.architecture(),
        rows: shape.rows,
        cols: shape.cols,
        channels: shape.channels,
        class_names: class_names.to_vec(),
        input: pixels.to_vec(),
        layers,
        probabilities,
        top,
    }
}

/// The picture of the first convolution's kernels.
pub const KERNELS_PICTURE: &str = "conv2d-kernels";
/// The picture of every hidden dense layer's activations.
pub const DENSE_PICTURE: &str = "dense";
/// The picture of the output probabilities.
pub const PROBABILITIES_PICTURE: &str = "probabilities";

/// The pictures an inspection of `network` has, by the name of the file `inspect` writes for
/// each: the first convolution's kernels, every convolution block's maps before and after
/// pooling, the hidden dense layers' activations and the probabilities, as far as the network
/// has such layers.
pub fn pictures(network: &Network) -> Vec<String> {
    let layers = network.layers();
    let mut names = Vec::new();
    for step in &layers {
        if let Op::ConvBlock(_) = step.op {
            if names.is_empty() {
                names.push(KERNELS_PICTURE.to_string());
            }
            names.push(step.name.clone());
            names.extend(step.pooling.clone());
        }
    }
    if layers
        .iter()
        .any(|step| matches!(step.op, Op::Dense(_, true)))
    {
        names.push(DENSE_PICTURE.to_string());
    }
    names.push(PROBABILITIES_PICTURE.to_string());
    names
}

fn maps_view(layer: &Layer) -> MapsView<'_> {
    let dim = |i: usize| layer.shape.get(i).copied().unwrap_or(1);
    MapsView {
        channels: dim(0),
        rows: dim(1),
        cols: dim(2),
        values: &layer.values,
    }
}

/// One picture of [`pictures`] as PNG bytes; `None` for a name the inspection has no picture
/// for.
pub fn picture(inspection: &Inspection, name: &str) -> Option<Result<Vec<u8>>> {
    let named = |suffix: &str| inspection.layers.iter().find(|l| l.name.ends_with(suffix));
    match name {
        KERNELS_PICTURE => {
            let kernels = named("/kernel")?;
            let bias = named("/bias").map_or(&[][..], |b| &b.values[..]);
            let title = format!(
                "{}: {} (weights)",
                kernels.name.trim_end_matches("/kernel"),
                kernels
                    .description
                    .trim_end_matches(KERNELS_DESCRIPTION)
                    .trim_end()
            );
            Some(kernel_grid(&title, &maps_view(kernels), bias))
        }
        DENSE_PICTURE => {
            let hidden: Vec<(&str, &[f32])> = inspection
                .layers
                .iter()
                .filter(|l| l.description.ends_with(DENSE_DESCRIPTION))
                .map(|l| (l.name.as_str(), &l.values[..]))
                .collect();
            (!hidden.is_empty()).then(|| dense_strips("Dense activations after ReLU", &hidden))
        }
        PROBABILITIES_PICTURE => Some(probability_bars(
            "Softmax: probability per class",
            &inspection.probabilities,
            &inspection.class_names,
        )),
        _ => {
            let maps = inspection
                .layer(name)
                .filter(|l| l.shape.len() == 3 && !l.name.contains('/'))?;
            let channels = maps.shape[0];
            let title = if maps.description.contains("max pooling") {
                format!("{name}: {channels} maps, the largest of each 2x2")
            } else {
                format!("{name} + ReLU: {channels} feature maps")
            };
            Some(feature_grid(&title, &maps_view(maps), 8))
        }
    }
}

/// Writes `input.png` (what the network reads: a heatmap of a grayscale input, the colours of
/// a colour one) and every picture of the inspection into `dir` as `<name>.png`; returns the
/// paths written.
pub fn write_pictures(
    inspection: &Inspection,
    network: &Network,
    dir: &Path,
    title: &str,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let input_path = dir.join("input.png");
    let (rows, cols) = (inspection.rows, inspection.cols);
    if inspection.channels == 1 {
        let values: Vec<f64> = inspection.input.iter().map(|&p| f64::from(p)).collect();
        heatmap(
            &input_path,
            &values,
            rows,
            cols,
            &HeatmapOptions::new(
                format!("{title}: the input the network reads"),
                (0.0, 255.0),
            ),
        )?;
    } else {
        input_picture(
            &input_path,
            &inspection.input,
            rows,
            cols,
            inspection.channels,
        )?;
    }
    written.push(input_path);
    for name in pictures(network) {
        if let Some(png) = picture(inspection, &name) {
            let path = dir.join(format!("{name}.png"));
            write_png(&path, &png?)?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::model::InputShape;
    use burn::nn::pool::MaxPool2dConfig;

    fn digit() -> Vec<u8> {
        (0..784)
            .map(|i| if (i % 28) / 3 == 4 { 230 } else { 0 })
            .collect()
    }

    #[test]
    fn cnn_layers_match_the_forward_pass() {
        let device = BackendKind::Flex.device();
        device.seed(7);
        let network = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let pixels = digit();
        let inspection = inspect(&network, &names, &pixels, InputShape::MNIST, &device);
        let expected =
            values(network.probabilities(single_image_tensor(&pixels, 28, 28, 1, &device)));
        assert_eq!(
            inspection.probabilities, expected,
            "same as the forward pass"
        );
        let shapes: Vec<(&str, Vec<usize>)> = inspection
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.shape.clone()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("conv2d/kernel", vec![16, 3, 3]),
                ("conv2d/bias", vec![16]),
                ("conv2d", vec![16, 28, 28]),
                ("max_pooling2d", vec![16, 14, 14]),
                ("conv2d_1", vec![32, 14, 14]),
                ("max_pooling2d_1", vec![32, 7, 7]),
                ("dense", vec![128]),
                ("dense_1", vec![128]),
                ("dense_2", vec![10]),
            ]
        );
        // Pooling the stored conv2d maps gives the fused kernel's pooled maps.
        let conv = inspection.layer("conv2d").unwrap();
        let conv = Tensor::<4>::from_data(
            TensorData::new(conv.values.clone(), [1, 16, 28, 28]),
            &device,
        );
        let pooled = values(
            MaxPool2dConfig::new([2, 2])
                .with_strides([2, 2])
                .init()
                .forward(conv),
        );
        let fused = &inspection.layer("max_pooling2d").unwrap().values;
        for (a, b) in pooled.iter().zip(fused) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(
            inspection
                .layer("conv2d")
                .unwrap()
                .values
                .iter()
                .all(|&v| v >= 0.0)
        );
        assert_eq!(inspection.top.len(), 10);
        assert_eq!(
            pictures(&network),
            [
                "conv2d-kernels",
                "conv2d",
                "max_pooling2d",
                "conv2d_1",
                "max_pooling2d_1",
                "dense",
                "probabilities"
            ]
        );
        for picture_name in pictures(&network) {
            let png = picture(&inspection, &picture_name).unwrap().unwrap();
            image::load_from_memory(&png).unwrap();
        }
    }

    #[test]
    fn mlp_has_dense_layers_only() {
        let device = BackendKind::Flex.device();
        let network = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let inspection = inspect(&network, &names, &digit(), InputShape::MNIST, &device);
        let layer_names: Vec<&str> = inspection.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(layer_names, ["dense", "dense_1", "dense_2"]);
        assert_eq!(pictures(&network), ["dense", "probabilities"]);
        assert!(picture(&inspection, "conv2d").is_none());
        let dir = tempfile::tempdir().unwrap();
        let written = write_pictures(&inspection, &network, dir.path(), "test").unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
        let strips = image::load_from_memory(&std::fs::read(&written[1]).unwrap()).unwrap();
        assert!(strips.width() > 100, "the dense strips are drawn");
    }

    #[test]
    fn colour_networks_are_inspected_in_colour() {
        let device = BackendKind::Flex.device();
        let shape = InputShape {
            channels: 3,
            rows: 12,
            cols: 16,
            classes: 4,
        };
        let network = Network::new(Architecture::Cnn, shape, &device);
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let pixels: Vec<u8> = (0..12 * 16 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let inspection = inspect(&network, &names, &pixels, shape, &device);
        let expected =
            values(network.probabilities(single_image_tensor(&pixels, 12, 16, 3, &device)));
        assert_eq!(inspection.probabilities, expected);
        assert_eq!(
            inspection.layer("conv2d/kernel").unwrap().shape,
            [16, 9, 3],
            "three channels of 3x3 kernels, stacked"
        );
        let dir = tempfile::tempdir().unwrap();
        let written = write_pictures(&inspection, &network, dir.path(), "colour").unwrap();
        assert_eq!(written.len(), 1 + pictures(&network).len());
        let input = image::open(&written[0]).unwrap().to_rgb8();
        assert!(
            input.pixels().any(|p| p.0[0] != p.0[1]),
            "the input is drawn in colour"
        );
    }
}
