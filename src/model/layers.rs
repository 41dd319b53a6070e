//! The layer walk: a network as a list of layers, each of which can run on its own. The
//! forward pass is the walk from first to last; `inspect` walks it keeping every activation,
//! `bench --profile` timing every layer, and the summary reading every layer's shape.

use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::{InputShape, LayerSummary, affine};
use crate::kernels::conv3x3_pool_relu;

/// What one layer computes.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Conv2d 3x3 with "same" padding, ReLU, then MaxPool 2x2: one fused kernel
    /// ([`conv3x3_pool_relu`]), identical to the three layers in sequence.
    ConvBlock(&'a Conv2d),
    /// Feature maps to one vector per image, channels first.
    Flatten,
    /// `x · weight + bias`, with ReLU after it when the flag is set. The last dense layer has
    /// none: it gives the logits, whose softmax is the network's output.
    Dense(&'a Linear, bool),
}

/// One layer of a network, with Keras's names for what it computes.
#[derive(Debug, Clone)]
pub struct Layer<'a> {
    pub op: Op<'a>,
    /// Keras's name of the layer: "conv2d", "flatten", "dense_1", ...
    pub name: String,
    /// A convolution block's pooling layer, as Keras names it ("max_pooling2d", ...).
    pub pooling: Option<String>,
}

/// A layer's input or output: feature maps `[batch, channels, rows, cols]`, or one vector per
/// image `[batch, features]`.
#[derive(Debug, Clone)]
pub enum Activation {
    Maps(Tensor<4>),
    Features(Tensor<2>),
}

impl Activation {
    /// The feature maps; a layer list that hands vectors to a convolution is a bug.
    pub fn into_maps(self) -> Tensor<4> {
        match self {
            Activation::Maps(maps) => maps,
            Activation::Features(_) => panic!("a convolution follows a dense layer"),
        }
    }

    /// The vectors; a layer list that ends on feature maps is a bug.
    pub fn into_features(self) -> Tensor<2> {
        match self {
            Activation::Features(features) => features,
            Activation::Maps(_) => panic!("a dense layer follows feature maps without Flatten"),
        }
    }

    /// The shape, batch first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Activation::Maps(maps) => maps.dims().to_vec(),
            Activation::Features(features) => features.dims().to_vec(),
        }
    }

    /// The sum of every value, for a backward pass from this activation.
    pub fn sum(self) -> Tensor<1> {
        match self {
            Activation::Maps(maps) => maps.sum(),
            Activation::Features(features) => features.sum(),
        }
    }

    pub fn detach(self) -> Self {
        self.map(Tensor::detach, Tensor::detach)
    }

    pub fn require_grad(self) -> Self {
        self.map(Tensor::require_grad, Tensor::require_grad)
    }

    fn map(
        self,
        maps: impl FnOnce(Tensor<4>) -> Tensor<4>,
        features: impl FnOnce(Tensor<2>) -> Tensor<2>,
    ) -> Self {
        match self {
            Activation::Maps(x) => Activation::Maps(maps(x)),
            Activation::Features(x) => Activation::Features(features(x)),
        }
    }
}

impl Layer<'_> {
    /// Runs this layer alone.
    pub fn forward(&self, input: Activation) -> Activation {
        match self.op {
            Op::ConvBlock(conv) => {
                let bias = conv
                    .bias
                    .as_ref()
                    .expect("convolutions are built with a bias");
                Activation::Maps(conv3x3_pool_relu(
                    input.into_maps(),
                    conv.weight.val(),
                    bias.val(),
                ))
            }
            Op::Flatten => match input {
                Activation::Maps(maps) => Activation::Features(maps.flatten(1, 3)),
                features => features,
            },
            Op::Dense(layer, with_relu) => {
                let output = affine(layer, input.into_features());
                Activation::Features(if with_relu { relu(output) } else { output })
            }
        }
    }

    /// A name for timings: a block's layers joined, e.g. `conv2d+relu+max_pooling2d`.
    pub fn label(&self) -> String {
        match (&self.op, &self.pooling) {
            (Op::ConvBlock(_), Some(pooling)) => format!("{}+relu+{pooling}", self.name),
            (Op::Dense(_, true), _) => format!("{}+relu", self.name),
            _ => self.name.clone(),
        }
    }
}

/// Keras's name for the `index`-th layer of a kind (0-based): `dense`, `dense_1`, ...
fn keras_name(kind: &str, index: usize) -> String {
    if index == 0 {
        kind.to_string()
    } else {
        format!("{kind}_{index}")
    }
}

/// The layers with the names Keras gives them, counting each kind from the first layer.
pub(super) fn named(ops: Vec<Op<'_>>) -> Vec<Layer<'_>> {
    let (mut convs, mut flattens, mut denses) = (0, 0, 0);
    ops.into_iter()
        .map(|op| {
            let (name, pooling) = match op {
                Op::ConvBlock(_) => {
                    convs += 1;
                    (
                        keras_name("conv2d", convs - 1),
                        Some(keras_name("max_pooling2d", convs - 1)),
                    )
                }
                Op::Flatten => {
                    flattens += 1;
                    (keras_name("flatten", flattens - 1), None)
                }
                Op::Dense(..) => {
                    denses += 1;
                    (keras_name("dense", denses - 1), None)
                }
            };
            Layer { op, name, pooling }
        })
        .collect()
}

/// Keras's summary rows for `layers` on images of `shape`: each layer's output shape (channels
/// last, as Keras prints it) follows from its input's and its weights.
pub(super) fn summary(layers: &[Layer<'_>], shape: InputShape) -> Vec<LayerSummary> {
    // Channels first while walking: [channels, rows, cols], or [features].
    let mut dims = vec![shape.channels, shape.rows, shape.cols];
    let mut rows = Vec::new();
    for layer in layers {
        match layer.op {
            Op::ConvBlock(conv) => {
                let filters = conv.weight.dims()[0];
                let (height, width) = (dims[1], dims[2]);
                rows.push(LayerSummary::new(
                    &format!("{} (Conv2D, ReLU)", layer.name),
                    &[height, width, filters],
                    conv.num_params(),
                ));
                dims = vec![filters, height / 2, width / 2];
                let pooling = layer.pooling.as_deref().unwrap_or("max_pooling2d");
                rows.push(LayerSummary::new(
                    &format!("{pooling} (MaxPooling2D)"),
                    &[dims[1], dims[2], filters],
                    0,
                ));
            }
            Op::Flatten => {
                dims = vec![dims.iter().product()];
                rows.push(LayerSummary::new(
                    &format!("{} (Flatten)", layer.name),
                    &dims,
                    0,
                ));
            }
            Op::Dense(dense, with_relu) => {
                dims = vec![dense.weight.dims()[1]];
                let activation = if with_relu { "ReLU" } else { "softmax" };
                rows.push(LayerSummary::new(
                    &format!("{} (Dense, {activation})", layer.name),
                    &dims,
                    dense.num_params(),
                ));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Architecture, Network};

    #[test]
    fn layers_carry_keras_names_in_order() {
        let device = Device::flex();
        let cnn = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        let labels: Vec<String> = cnn.layers().iter().map(Layer::label).collect();
        assert_eq!(
            labels,
            [
                "conv2d+relu+max_pooling2d",
                "conv2d_1+relu+max_pooling2d_1",
                "flatten",
                "dense+relu",
                "dense_1+relu",
                "dense_2"
            ]
        );
        let mlp = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let names: Vec<String> = mlp.layers().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["flatten", "dense", "dense_1", "dense_2"]);
    }

    #[test]
    fn walking_layer_by_layer_is_the_forward_pass() {
        let device = Device::flex();
        device.seed(3);
        for architecture in [Architecture::Cnn, Architecture::Mlp] {
            let network = Network::new(architecture, InputShape::MNIST, &device);
            let images = Tensor::<4>::random(
                [2, 1, 28, 28],
                burn::tensor::Distribution::Uniform(0.0, 1.0),
                &device,
            );
            let mut x = Activation::Maps(images.clone());
            let mut shapes = Vec::new();
            for layer in network.layers() {
                x = layer.forward(x);
                shapes.push(x.dims());
            }
            let walked: Vec<f32> = x.into_features().into_data().try_to_vec().unwrap();
            let forward: Vec<f32> = network.forward(images).into_data().try_to_vec().unwrap();
            assert_eq!(walked, forward, "{architecture}");
            assert_eq!(shapes.last(), Some(&vec![2, 10]));
        }
    }
}
