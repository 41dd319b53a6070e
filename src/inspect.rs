//! Looking inside a trained network: the activations of every layer for one image, the first
//! convolution's kernels, and pictures of them (`mnist-cnn inspect`, and the `serve` page).

use std::path::{Path, PathBuf};

use burn::backend::ops::ConvOptions;
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::conv2d;
use serde::Serialize;

use crate::data::batch::single_image_tensor;
use crate::data::image::{Invert, to_mnist_layout};
use crate::error::{Error, Result};
use crate::kernels::conv3x3_pool_relu;
use crate::model::{Architecture, Network, affine};
use crate::plot::layers::{
    MapsView, dense_strips, feature_grid, kernel_grid, probability_bars, write_png,
};
use crate::plot::{HeatmapOptions, heatmap};
use crate::predict::ClassProbability;

/// Largest picture side accepted from a file or a request, in pixels.
pub const MAX_PICTURE_SIDE: u32 = 4096;
/// Most memory the decoder may allocate for one picture.
const MAX_PICTURE_BYTES: u64 = 64 << 20;

/// Decodes a PNG or JPEG from memory, refusing other formats and pictures larger than
/// [`MAX_PICTURE_SIDE`] on a side before allocating them.
pub fn decode_picture(bytes: &[u8]) -> std::result::Result<image::DynamicImage, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read as an image ({e})"))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err("not a PNG or JPEG picture".into()),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(MAX_PICTURE_BYTES);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| format!("cannot read as an image ({e})"))
}

/// The picture turned into what the network reads, exactly as `mnist-cnn predict` does it.
/// Every caller (`inspect`, the web server) prepares pictures through this one function.
pub fn prepare_digit(
    picture: &image::DynamicImage,
    invert: Invert,
    rows: usize,
    cols: usize,
) -> std::result::Result<Vec<u8>, String> {
    to_mnist_layout(&picture.to_luma8(), invert, rows as u32, cols as u32)
}

/// A picture file prepared by [`prepare_digit`], with errors naming the file.
pub fn load_picture(path: &Path, invert: Invert, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let picture = decode_picture(&bytes).map_err(image_error)?;
    prepare_digit(&picture, invert, rows, cols).map_err(image_error)
}

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
    pub class_names: Vec<String>,
    /// The pixels the network reads, 0-255, row-major.
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

/// Runs `pixels` (`rows` x `cols`, 0-255) through `network` and keeps every layer's output.
/// The feature blocks' pooled outputs and the probabilities are those of the network's own
/// forward pass (the fused kernels); the convolution outputs before pooling, which the fused
/// kernel never stores, come from burn's `conv2d` with the same weights.
pub fn inspect(
    network: &Network,
    class_names: &[String],
    pixels: &[u8],
    rows: usize,
    cols: usize,
    device: &Device,
) -> Inspection {
    let channels = (pixels.len() / (rows * cols).max(1)).max(1);
    let x = single_image_tensor(pixels, rows, cols, channels, device);
    let mut layers = Vec::new();
    let (d1, d2, output) = match network {
        Network::Cnn(cnn) => {
            let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let (w1, b1) = (
                cnn.conv1.weight.val(),
                cnn.conv1.bias.as_ref().map(|b| b.val()),
            );
            let (w2, b2) = (
                cnn.conv2.weight.val(),
                cnn.conv2.bias.as_ref().map(|b| b.val()),
            );
            let zeros = |n: usize| Tensor::<1>::zeros([n], device);
            let b1 = b1.unwrap_or_else(|| zeros(w1.dims()[0]));
            let b2 = b2.unwrap_or_else(|| zeros(w2.dims()[0]));
            let [filters, channels, kh, kw] = w1.dims();
            layers.push(Layer {
                name: "conv2d/kernel".into(),
                description: format!(
                    "the {filters} learned {kh}x{kw} kernels of the first convolution"
                ),
                shape: vec![filters, channels * kh, kw],
                values: values(w1.clone()),
            });
            layers.push(layer("conv2d/bias", "their biases", b1.clone()));
            let c1 = relu(conv2d(
                x.clone(),
                w1.clone(),
                Some(b1.clone()),
                same.clone(),
            ));
            layers.push(layer(
                "conv2d",
                "feature maps after convolution and ReLU",
                c1,
            ));
            let p1 = conv3x3_pool_relu(x, w1, b1);
            layers.push(layer("max_pooling2d", "after 2x2 max pooling", p1.clone()));
            let c2 = relu(conv2d(p1.clone(), w2.clone(), Some(b2.clone()), same));
            layers.push(layer(
                "conv2d_1",
                "feature maps after the second convolution and ReLU",
                c2,
            ));
            let p2 = conv3x3_pool_relu(p1, w2, b2);
            layers.push(layer(
                "max_pooling2d_1",
                "after the second 2x2 max pooling",
                p2.clone(),
            ));
            let flat: Tensor<2> = p2.flatten(1, 3);
            let d1 = relu(affine(&cnn.dense1, flat));
            let d2 = relu(affine(&cnn.dense2, d1.clone()));
            let output = affine(&cnn.output, d2.clone());
            (d1, d2, output)
        }
        Network::Mlp(mlp) => {
            let flat: Tensor<2> = x.flatten(1, 3);
            let d1 = relu(affine(&mlp.dense1, flat));
            let d2 = relu(affine(&mlp.dense2, d1.clone()));
            let output = affine(&mlp.output, d2.clone());
            (d1, d2, output)
        }
    };
    layers.push(layer("dense", "dense layer after ReLU", d1));
    layers.push(layer("dense_1", "second dense layer after ReLU", d2));
    let probabilities = values(softmax(output, 1));
    layers.push(Layer {
        name: "dense_2".into(),
        description: "softmax: one probability per class".into(),
        shape: vec![probabilities.len()],
        values: probabilities.clone(),
    });
    let top = crate::predict::rank(&probabilities, class_names);
    Inspection {
        architecture: network.architecture(),
        rows,
        cols,
        class_names: class_names.to_vec(),
        input: pixels.to_vec(),
        layers,
        probabilities,
        top,
    }
}

/// The pictures of an inspection, by the name of the file `inspect` writes for each.
pub const PICTURES: [&str; 7] = [
    "conv2d-kernels",
    "conv2d",
    "max_pooling2d",
    "conv2d_1",
    "max_pooling2d_1",
    "dense",
    "probabilities",
];

/// The pictures an inspection has: all of [`PICTURES`] for the CNN, the last two for the MLP.
pub fn available_pictures(architecture: Architecture) -> &'static [&'static str] {
    match architecture {
        Architecture::Cnn => &PICTURES,
        Architecture::Mlp => &PICTURES[5..],
    }
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

/// One picture of [`PICTURES`] as PNG bytes; `None` for a name the network has no picture for.
pub fn picture(inspection: &Inspection, name: &str) -> Option<Result<Vec<u8>>> {
    let find = |layer: &str| inspection.layer(layer);
    let grid = |layer: &str, title: String, columns: usize| {
        find(layer).map(|l| feature_grid(&title, &maps_view(l), columns))
    };
    match name {
        "conv2d-kernels" => {
            let kernels = find("conv2d/kernel")?;
            let bias = find("conv2d/bias").map_or(&[][..], |b| &b.values[..]);
            let title = format!(
                "conv2d: the {} learned 3x3 kernels (weights)",
                kernels.shape[0]
            );
            Some(kernel_grid(&title, &maps_view(kernels), bias))
        }
        "conv2d" => grid("conv2d", "conv2d + ReLU: 16 feature maps".into(), 8),
        "max_pooling2d" => grid(
            "max_pooling2d",
            "max_pooling2d: 16 maps, the largest of each 2x2".into(),
            8,
        ),
        "conv2d_1" => grid("conv2d_1", "conv2d_1 + ReLU: 32 feature maps".into(), 8),
        "max_pooling2d_1" => grid(
            "max_pooling2d_1",
            "max_pooling2d_1: 32 maps, the largest of each 2x2".into(),
            8,
        ),
        "dense" => {
            let (d1, d2) = (find("dense")?, find("dense_1")?);
            Some(dense_strips(
                "Dense activations after ReLU",
                &[("dense", &d1.values), ("dense_1", &d2.values)],
            ))
        }
        "probabilities" => Some(probability_bars(
            "Softmax: probability per class",
            &inspection.probabilities,
            &inspection.class_names,
        )),
        _ => None,
    }
}

/// Writes `input.png` (the 28x28 the network reads, as `heatmap` draws it) and every picture
/// of the inspection into `dir` as `<name>.png`; returns the paths written.
pub fn write_pictures(inspection: &Inspection, dir: &Path, title: &str) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let input_path = dir.join("input.png");
    let values: Vec<f64> = inspection.input.iter().map(|&p| f64::from(p)).collect();
    heatmap(
        &input_path,
        &values,
        inspection.rows,
        inspection.cols,
        &HeatmapOptions::new(
            format!("{title}: the input the network reads"),
            (0.0, 255.0),
        ),
    )?;
    written.push(input_path);
    for &name in available_pictures(inspection.architecture) {
        if let Some(png) = picture(inspection, name) {
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
        let inspection = inspect(&network, &names, &pixels, 28, 28, &device);
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
        for picture_name in PICTURES {
            let png = picture(&inspection, picture_name).unwrap().unwrap();
            image::load_from_memory(&png).unwrap();
        }
    }

    #[test]
    fn mlp_has_dense_layers_only() {
        let device = BackendKind::Flex.device();
        let network = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let inspection = inspect(&network, &names, &digit(), 28, 28, &device);
        let names: Vec<&str> = inspection.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["dense", "dense_1", "dense_2"]);
        assert!(picture(&inspection, "conv2d").is_none());
        let dir = tempfile::tempdir().unwrap();
        let written = write_pictures(&inspection, dir.path(), "test").unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
    }

    #[test]
    fn pictures_are_decoded_with_caps() {
        assert!(decode_picture(b"not a picture").is_err());
        let huge = image::GrayImage::new(MAX_PICTURE_SIDE + 1, 1);
        let mut png = Vec::new();
        huge.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let error = decode_picture(&png).unwrap_err();
        assert!(error.contains("cannot read"), "{error}");
    }
}
