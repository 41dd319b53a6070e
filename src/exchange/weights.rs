//! A network's weights as plain arrays in burn's layouts, between the files of other tools and
//! [`Network`]: every import builds one, every export reads one.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::model::{Architecture, InputShape, Network};

/// Filters of the CNN's two convolutions and units of the hidden dense layers, as
/// [`crate::model`] builds them.
pub(crate) const CNN_FILTERS: [usize; 2] = [16, 32];
pub(crate) const HIDDEN_UNITS: usize = 128;

/// One layer's weights: a 3x3 convolution's `[filters, channels, 3, 3]` kernel or a dense
/// layer's `[inputs, outputs]` matrix (burn's layouts), and the bias.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    /// Its name in this tool's model (`conv1`, `dense1`, ...), also PyTorch's and ONNX's.
    pub name: &'static str,
    pub dims: Vec<usize>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Every layer of a network of `architecture` built for `shape`, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelWeights {
    pub architecture: Architecture,
    pub shape: InputShape,
    pub layers: Vec<Layer>,
}

/// The names and weight dimensions of every layer of `architecture` for `shape`.
pub(crate) fn layout(
    architecture: Architecture,
    shape: InputShape,
) -> Vec<(&'static str, Vec<usize>)> {
    let dense = |inputs| {
        vec![
            ("dense1", vec![inputs, HIDDEN_UNITS]),
            ("dense2", vec![HIDDEN_UNITS, HIDDEN_UNITS]),
            ("output", vec![HIDDEN_UNITS, shape.classes]),
        ]
    };
    match architecture {
        Architecture::Cnn => {
            let [first, second] = CNN_FILTERS;
            let mut layers = vec![
                ("conv1", vec![first, shape.channels, 3, 3]),
                ("conv2", vec![second, first, 3, 3]),
            ];
            layers.extend(dense(shape.cnn_features()));
            layers
        }
        Architecture::Mlp => dense(shape.image_len()),
    }
}

/// Parameters of `architecture` for `shape`: weights and biases.
pub(crate) fn parameter_count(architecture: Architecture, shape: InputShape) -> usize {
    layout(architecture, shape)
        .iter()
        .map(|(_, dims)| dims.iter().product::<usize>() + bias_len(dims))
        .sum()
}

/// A layer's bias has one value per filter (the first dimension of a kernel) or per output
/// (the last of a dense matrix).
pub(crate) fn bias_len(dims: &[usize]) -> usize {
    if dims.len() == 4 { dims[0] } else { dims[1] }
}

impl ModelWeights {
    /// Checks that the layers are exactly those of the architecture for the shape.
    pub fn check(&self) -> std::result::Result<(), String> {
        let expected = layout(self.architecture, self.shape);
        if expected.len() != self.layers.len() {
            return Err(format!(
                "{} layers of weights, the {} has {}",
                self.layers.len(),
                self.architecture,
                expected.len()
            ));
        }
        for ((name, dims), layer) in expected.iter().zip(&self.layers) {
            let fits = layer.name == *name
                && layer.dims == *dims
                && layer.weight.len() == dims.iter().product::<usize>()
                && layer.bias.len() == bias_len(dims);
            if !fits {
                return Err(format!(
                    "{} has weights {:?} and {} biases, the {}'s {name} has {dims:?} and {}",
                    layer.name,
                    layer.dims,
                    layer.bias.len(),
                    self.architecture,
                    bias_len(dims)
                ));
            }
        }
        Ok(())
    }

    /// The network with these weights, on `device`.
    pub fn into_network(self, device: &Device) -> Network {
        let mut network = Network::new(self.architecture, self.shape, device);
        let mut layers = self.layers.into_iter();
        let mut next = || {
            layers
                .next()
                .expect("checked: one set of weights per layer")
        };
        match &mut network {
            Network::Cnn(cnn) => {
                set_conv(&mut cnn.conv1, next(), device);
                set_conv(&mut cnn.conv2, next(), device);
                set_dense(&mut cnn.dense1, next(), device);
                set_dense(&mut cnn.dense2, next(), device);
                set_dense(&mut cnn.output, next(), device);
            }
            Network::Mlp(mlp) => {
                set_dense(&mut mlp.dense1, next(), device);
                set_dense(&mut mlp.dense2, next(), device);
                set_dense(&mut mlp.output, next(), device);
            }
        }
        network
    }

    /// The weights of `network`, built for `shape`.
    pub fn of(network: &Network, shape: InputShape) -> Self {
        let layers = match network {
            Network::Cnn(cnn) => vec![
                conv_layer("conv1", &cnn.conv1),
                conv_layer("conv2", &cnn.conv2),
                dense_layer("dense1", &cnn.dense1),
                dense_layer("dense2", &cnn.dense2),
                dense_layer("output", &cnn.output),
            ],
            Network::Mlp(mlp) => vec![
                dense_layer("dense1", &mlp.dense1),
                dense_layer("dense2", &mlp.dense2),
                dense_layer("output", &mlp.output),
            ],
        };
        Self {
            architecture: network.architecture(),
            shape,
            layers,
        }
    }
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

fn conv_layer(name: &'static str, conv: &Conv2d) -> Layer {
    let bias = conv
        .bias
        .as_ref()
        .expect("convolutions are built with a bias");
    Layer {
        name,
        dims: conv.weight.dims().to_vec(),
        weight: values(conv.weight.val()),
        bias: values(bias.val()),
    }
}

fn dense_layer(name: &'static str, dense: &Linear) -> Layer {
    let bias = dense
        .bias
        .as_ref()
        .expect("dense layers are built with a bias");
    Layer {
        name,
        dims: dense.weight.dims().to_vec(),
        weight: values(dense.weight.val()),
        bias: values(bias.val()),
    }
}

fn tensor<const D: usize>(values: Vec<f32>, dims: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, dims), device)
}

fn set_conv(conv: &mut Conv2d, layer: Layer, device: &Device) {
    let dims: [usize; 4] = conv.weight.dims();
    let filters = dims[0];
    conv.weight = Param::from_tensor(tensor(layer.weight, dims, device));
    conv.bias = Some(Param::from_tensor(tensor(layer.bias, [filters], device)));
}

fn set_dense(dense: &mut Linear, layer: Layer, device: &Device) {
    let dims: [usize; 2] = dense.weight.dims();
    dense.weight = Param::from_tensor(tensor(layer.weight, dims, device));
    dense.bias = Some(Param::from_tensor(tensor(layer.bias, [dims[1]], device)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn layout_matches_the_networks_parameters() {
        let device = Device::flex();
        let colour = InputShape {
            channels: 3,
            classes: 4,
            ..InputShape::MNIST
        };
        for shape in [InputShape::MNIST, colour] {
            for architecture in [Architecture::Cnn, Architecture::Mlp] {
                let network = Network::new(architecture, shape, &device);
                assert_eq!(
                    parameter_count(architecture, shape),
                    network.num_params(),
                    "{architecture} {shape:?}"
                );
                let weights = ModelWeights::of(&network, shape);
                weights.check().unwrap();
                let names: Vec<_> = weights.layers.iter().map(|l| l.name).collect();
                let expected: Vec<_> = layout(architecture, shape).iter().map(|l| l.0).collect();
                assert_eq!(names, expected);
            }
        }
    }

    #[test]
    fn weights_go_into_a_network_and_come_out_unchanged() {
        let device = Device::flex();
        let shape = InputShape::MNIST;
        let mut weights = ModelWeights::of(&Network::new(Architecture::Cnn, shape, &device), shape);
        for (i, layer) in weights.layers.iter_mut().enumerate() {
            for (j, value) in layer.weight.iter_mut().enumerate() {
                *value = (i * 7 + j % 13) as f32 * 0.25;
            }
            layer.bias.iter_mut().for_each(|b| *b = i as f32);
        }
        let network = weights.clone().into_network(&device);
        assert_eq!(ModelWeights::of(&network, shape), weights);
        let mut wrong = weights.clone();
        wrong.layers[2].dims = vec![1567, 128];
        assert!(wrong.check().unwrap_err().contains("dense1"));
    }
}
