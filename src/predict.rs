//! Classifying single images with a trained network.

use burn::prelude::Device;
use burn::tensor::activation::softmax;
use serde::Serialize;

use crate::data::batch::single_image_tensor;
use crate::model::Network;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassProbability {
    pub class: usize,
    pub name: String,
    pub probability: f64,
}

/// The `k` most probable classes of one image, most probable first; `class_names` names the
/// network's outputs.
pub fn top_classes(
    network: &Network,
    class_names: &[String],
    pixels: &[u8],
    rows: usize,
    cols: usize,
    k: usize,
    device: &Device,
) -> Vec<ClassProbability> {
    let logits = network.forward(single_image_tensor(pixels, rows, cols, device));
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
