//! Classifying single images with a trained network.

use burn::prelude::Device;
use burn::tensor::activation::softmax;
use serde::Serialize;

use crate::data::batch::single_image_tensor;
use crate::model::{InputShape, Network};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassProbability {
    pub class: usize,
    pub name: String,
    pub probability: f64,
}

/// The `k` most probable classes of one image (`shape.channels` interleaved bytes a pixel),
/// most probable first; `class_names` names the network's outputs.
pub fn top_classes(
    network: &Network,
    class_names: &[String],
    pixels: &[u8],
    shape: InputShape,
    k: usize,
    device: &Device,
) -> Vec<ClassProbability> {
    let tensor = single_image_tensor(pixels, shape.rows, shape.cols, shape.channels, device);
    let logits = network.forward(tensor);
    let probabilities: Vec<f32> = softmax(logits, 1)
        .into_data()
        .try_into_vec::<f32>()
        .expect("probabilities of an f32 network are f32");
    let mut ranked: Vec<ClassProbability> = probabilities
        .iter()
        .enumerate()
        .map(|(class, &p)| ClassProbability {
            class,
            name: class_names
                .get(class)
                .cloned()
                .unwrap_or_else(|| class.to_string()),
            probability: f64::from(p),
        })
        .collect();
    ranked.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    ranked.truncate(k);
    ranked
}
