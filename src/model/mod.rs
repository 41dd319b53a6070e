//! The network: the seed's small CNN, and the fully connected alternative it suggests trying.
//!
//! Each architecture is a module struct holding its weights and a list of its layers in order
//! ([`Network::layers`], see [`layers`]). That list is the one description of the network: the
//! forward pass walks it, and so do Keras's summary, `inspect` (every layer's values) and
//! `bench --profile` (every layer's time). Adding an architecture is a variant of
//! [`Architecture`], its struct with a constructor, and its arm in [`Network::layers`].

pub mod layers;

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::activation::{log_softmax, softmax};

use crate::data::Split;
use crate::data::batch::images_tensor;
use crate::error::{Error, Result};
use crate::kernels::linear;

pub use layers::{Activation, Layer, Op};

/// Which network to build. Adding one means a variant here, its module below and its arm in
/// [`Network::new`] and [`Network::layers`]; the command line's `--model` values and help come
/// from this enum.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Architecture {
    /// The seed's CNN: two 3x3 convolutions with max pooling, then three dense layers
    Cnn,
    /// Fully connected: Flatten-Dense128-Dense128-Dense10
    Mlp,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Cnn => "cnn",
            Architecture::Mlp => "mlp",
        }
    }
}

/// One row of Keras's `model.summary()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerSummary {
    /// Keras's layer name and type, e.g. `conv2d (Conv2D, ReLU)`.
    pub name: String,
    /// Output shape of one image, channels last as Keras prints it.
    pub output: Vec<usize>,
    pub parameters: usize,
}

impl LayerSummary {
    pub(crate) fn new(name: &str, output: &[usize], parameters: usize) -> Self {
        Self {
            name: name.to_string(),
            output: output.to_vec(),
            parameters,
        }
    }

    /// `(None, 28, 28, 16)`, as Keras prints a shape with its batch dimension.
    pub fn output_shape(&self) -> String {
        let dims: Vec<String> = self.output.iter().map(usize::to_string).collect();
        format!("(None, {})", dims.join(", "))
    }
}

/// The index of the largest value (the first of equal ones); 0 for an empty slice.
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// What a network is built for: the image size, its channels and the number of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputShape {
    pub rows: usize,
    pub cols: usize,
    pub classes: usize,
    /// 1 for grayscale, 3 for colour; runs written before colour support have none (1).
    #[serde(default = "one_channel")]
    pub channels: usize,
}

fn one_channel() -> usize {
    1
}

impl InputShape {
    pub const MNIST: InputShape = InputShape {
        rows: 28,
        cols: 28,
        classes: 10,
        channels: 1,
    };

    /// The image size and channels of `split` and the classes it names or uses.
    pub fn of(split: &Split) -> Self {
        Self {
            rows: split.rows,
            cols: split.cols,
            classes: split.num_classes(),
            channels: split.channels,
        }
    }

    /// Values of one image: rows x cols x channels.
    pub fn image_len(self) -> usize {
        self.rows * self.cols * self.channels
    }

    /// Features after the two 2x2 poolings, which drop an odd last row or column (floor), as
    /// Keras's MaxPooling2D does.
    pub fn cnn_features(self) -> usize {
        32 * (self.rows / 4) * (self.cols / 4)
    }

    pub fn check(self, architecture: Architecture) -> Result<()> {
        if architecture == Architecture::Cnn && (self.rows < 4 || self.cols < 4) {
            return Err(Error::InvalidArgument(format!(
                "the CNN needs images of at least 4x4 pixels (two 2x2 poolings), got {}x{}",
                self.rows, self.cols
            )));
        }
        if !(1..=crate::data::idx::MAX_CHANNELS).contains(&self.channels) {
            return Err(Error::InvalidArgument(format!(
                "images of {} channels are not supported (1 to {})",
                self.channels,
                crate::data::idx::MAX_CHANNELS
            )));
        }
        if self.classes < 2 {
            return Err(Error::InvalidArgument(format!(
                "training needs at least 2 classes, the data has {}",
                self.classes
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Keras initialises Conv2D and Dense kernels with Glorot uniform and biases with zeros; doing
/// the same keeps the training curves comparable with the seed notebook.
fn glorot() -> Initializer {
    Initializer::XavierUniform { gain: 1.0 }
}

fn dense(inputs: usize, outputs: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(inputs, outputs)
        .with_initializer(glorot())
        .init(device);
    linear.bias = Some(Initializer::Zeros.init([outputs], device));
    linear
}

fn conv3x3(inputs: usize, outputs: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([inputs, outputs], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .with_initializer(glorot())
        .init(device);
    conv.bias = Some(Initializer::Zeros.init([outputs], device));
    conv
}

#[derive(Module, Debug)]
pub struct Cnn {
    pub(crate) conv1: Conv2d,
    pub(crate) conv2: Conv2d,
    pub(crate) dense1: Linear,
    pub(crate) dense2: Linear,
    pub(crate) output: Linear,
}

impl Cnn {
    pub fn new(shape: InputShape, device: &Device) -> Self {
        Self {
            conv1: conv3x3(shape.channels, 16, device),
            conv2: conv3x3(16, 32, device),
            dense1: dense(shape.cnn_features(), 128, device),
            dense2: dense(128, 128, device),
            output: dense(128, shape.classes, device),
        }
    }

    fn layers(&self) -> Vec<Op<'_>> {
        vec![
            Op::ConvBlock(&self.conv1),
            Op::ConvBlock(&self.conv2),
            Op::Flatten,
            Op::Dense(&self.dense1, true),
            Op::Dense(&self.dense2, true),
            Op::Dense(&self.output, false),
        ]
    }
}

/// A dense layer's `x · weight + bias`, computed as burn's `Linear` computes it, by the fused
/// kernel where the backend has it (`crate::kernels`).
pub(crate) fn affine(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    let bias = layer
        .bias
        .as_ref()
        .expect("dense layers are built with a bias");
    linear(x, layer.weight.val(), bias.val())
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub(crate) dense1: Linear,
    pub(crate) dense2: Linear,
    pub(crate) output: Linear,
}

impl Mlp {
    pub fn new(shape: InputShape, device: &Device) -> Self {
        Self {
            dense1: dense(shape.image_len(), 128, device),
            dense2: dense(128, 128, device),
            output: dense(128, shape.classes, device),
        }
    }

    fn layers(&self) -> Vec<Op<'_>> {
        vec![
            Op::Flatten,
            Op::Dense(&self.dense1, true),
            Op::Dense(&self.dense2, true),
            Op::Dense(&self.output, false),
        ]
    }
}

/// Either network, behind one forward pass.
// A process holds one or two networks, so the size gap between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    Cnn(Cnn),
    Mlp(Mlp),
}

impl Network {
    pub fn new(architecture: Architecture, shape: InputShape, device: &Device) -> Self {
        match architecture {
            Architecture::Cnn => Network::Cnn(Cnn::new(shape, device)),
            Architecture::Mlp => Network::Mlp(Mlp::new(shape, device)),
        }
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            Network::Cnn(_) => Architecture::Cnn,
            Network::Mlp(_) => Architecture::Mlp,
        }
    }

    /// The layers in the order the forward pass runs them, with Keras's names.
    pub fn layers(&self) -> Vec<Layer<'_>> {
        layers::named(match self {
            Network::Cnn(cnn) => cnn.layers(),
            Network::Mlp(mlp) => mlp.layers(),
        })
    }

    /// Logits, `[batch, classes]`: the walk through [`Network::layers`]. The softmax of the
    /// seed's last layer is applied by [`Network::probabilities`] and, fused with the loss, by
    /// [`categorical_cross_entropy`].
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.layers()
            .iter()
            .fold(Activation::Maps(images), |x, layer| layer.forward(x))
            .into_features()
    }

    pub fn probabilities(&self, images: Tensor<4>) -> Tensor<2> {
        softmax(self.forward(images), 1)
    }

    /// Keras's `model.summary()` rows for images of `shape`, read off the layers themselves.
    pub fn summary(&self, shape: InputShape) -> Vec<LayerSummary> {
        layers::summary(&self.layers(), shape)
    }

    /// A network of `architecture` for `shape` with the weights in `bytes` (a burnpack record,
    /// as read from `path`).
    pub fn from_bytes(
        architecture: Architecture,
        shape: InputShape,
        bytes: Vec<u8>,
        path: &std::path::Path,
        device: &Device,
    ) -> Result<Self> {
        let incompatible = |reason: String| Error::IncompatibleModel {
            path: path.to_path_buf(),
            architecture: architecture.to_string(),
            reason,
        };
        let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| incompatible(e.to_string()))?;
        Network::new(architecture, shape, device)
            .try_load_record(record)
            .map_err(|e| incompatible(e.to_string()))
    }
}

/// Log-probabilities of each image over the classes, one row per image.
pub struct ClassScores {
    pub classes: usize,
    pub values: Vec<f32>,
}

impl ClassScores {
    pub fn row(&self, image: usize) -> &[f32] {
        &self.values[image * self.classes..(image + 1) * self.classes]
    }

    pub fn rows(&self) -> std::slice::Chunks<'_, f32> {
        self.values.chunks(self.classes)
    }
}

/// Log-probabilities of the images of `split` at `indices`, computed in batches of
/// `batch_size` without gradients.
pub fn log_probabilities(
    network: &Network,
    split: &Split,
    indices: &[usize],
    batch_size: usize,
    device: &Device,
) -> ClassScores {
    let mut scores = ClassScores {
        classes: 1,
        values: Vec::new(),
    };
    for chunk in indices.chunks(batch_size.max(1)) {
        let logits = network.forward(images_tensor(split, chunk, device));
        scores.classes = logits.dims()[1];
        let values: Vec<f32> = log_softmax(logits, 1)
            .into_data()
            .try_into_vec::<f32>()
            .expect("log-softmax of f32 logits is f32");
        scores.values.extend(values);
    }
    scores
}

/// Categorical cross-entropy of one-hot targets on the softmax of `logits`, averaged over the
/// batch. Computed from log-softmax so large logits cannot overflow.
pub fn categorical_cross_entropy(logits: Tensor<2>, one_hot_targets: Tensor<2>) -> Tensor<1> {
    let batch = logits.dims()[0] as f64;
    (log_softmax(logits, 1) * one_hot_targets)
        .sum()
        .neg()
        .div_scalar(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use burn::nn::loss::CrossEntropyLossConfig;

    #[test]
    fn cnn_has_the_seed_parameter_count() {
        let device = Device::flex();
        let network = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        assert_eq!(network.num_params(), 223_434);
        let summary = network.summary(InputShape::MNIST);
        assert_eq!(summary.iter().map(|l| l.parameters).sum::<usize>(), 223_434);
        assert_eq!(summary[4].output_shape(), "(None, 1568)");
        assert_eq!(summary[0].output_shape(), "(None, 28, 28, 16)");
        assert_eq!(summary[7].output, vec![10]);
    }

    #[test]
    fn mlp_parameter_count_matches_summary() {
        let device = Device::flex();
        let network = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let summary_total: usize = network
            .summary(InputShape::MNIST)
            .iter()
            .map(|l| l.parameters)
            .sum();
        assert_eq!(network.num_params(), summary_total);
        assert_eq!(summary_total, 118_282);
    }

    #[test]
    fn forward_gives_ten_logits_per_image_on_both_backends() {
        for device in [BackendKind::Flex.device(), BackendKind::Ndarray.device()] {
            for architecture in [Architecture::Cnn, Architecture::Mlp] {
                let network = Network::new(architecture, InputShape::MNIST, &device);
                let images = Tensor::<4>::ones([3, 1, 28, 28], &device);
                assert_eq!(network.forward(images.clone()).dims(), [3, 10]);
                let row_sums: Vec<f32> = network
                    .probabilities(images)
                    .sum_dim(1)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap();
                for sum in row_sums {
                    assert!((sum - 1.0).abs() < 1e-5, "{sum}");
                }
            }
        }
    }

    #[test]
    fn other_image_sizes_and_class_counts() {
        let device = BackendKind::Flex.device();
        let shape = InputShape {
            rows: 13,
            cols: 18,
            classes: 3,
            channels: 1,
        };
        let network = Network::new(Architecture::Cnn, shape, &device);
        let logits = network.forward(Tensor::<4>::ones([2, 1, 13, 18], &device));
        assert_eq!(logits.dims(), [2, 3]);
        // Colour: the first convolution takes three channels, nothing else changes.
        let colour = InputShape {
            channels: 3,
            ..shape
        };
        let coloured = Network::new(Architecture::Cnn, colour, &device);
        let logits = coloured.forward(Tensor::<4>::ones([2, 3, 13, 18], &device));
        assert_eq!(logits.dims(), [2, 3]);
        assert_eq!(
            coloured.num_params() - network.num_params(),
            2 * 16 * 9,
            "two more input channels of 16 3x3 filters"
        );
        let summary = network.summary(shape);
        assert_eq!(
            summary[4].output_shape(),
            "(None, 384)",
            "32 x floor(13/4) x floor(18/4)"
        );
        assert_eq!(
            network.num_params(),
            summary.iter().map(|l| l.parameters).sum::<usize>()
        );
        assert!(
            InputShape { rows: 3, ..shape }
                .check(Architecture::Cnn)
                .is_err()
        );
        assert!(
            InputShape { rows: 3, ..shape }
                .check(Architecture::Mlp)
                .is_ok()
        );
    }

    #[test]
    fn categorical_cross_entropy_equals_burns_index_based_loss() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(
                vec![2.0f32, -1.0, 0.5, 30.0, 1.0, -30.0, 0.0, 0.0, 0.0],
                [3, 3],
            ),
            &device,
        );
        let labels = [0i64, 2, 1];
        let one_hot = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0., 0., 0., 0., 1., 0., 1., 0.], [3, 3]),
            &device,
        );
        let ours: f32 = categorical_cross_entropy(logits.clone(), one_hot).into_scalar();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [3]), &device);
        let burns: f32 = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, targets)
            .into_scalar();
        assert!(ours.is_finite());
        assert!((ours - burns).abs() < 1e-4, "ours {ours}, burn {burns}");
        assert!(ours > 10.0, "the 30-vs-(-30) row should dominate: {ours}");
    }
}
