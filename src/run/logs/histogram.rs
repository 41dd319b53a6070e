//! Weight histograms: each parameter tensor of a network summarised after an epoch, small
//! enough to keep in `run.json` (30 buckets each), so that the event file can be rebuilt from
//! the manifest alone.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::tensorboard::HistogramProto;
use crate::model::Network;

/// Buckets per histogram, as `tf.summary.histogram`'s default.
pub const BUCKETS: usize = 30;

/// The histograms of one epoch's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochHistograms {
    pub epoch: usize,
    pub parameters: Vec<WeightHistogram>,
}

/// One parameter tensor's values in [`BUCKETS`] buckets of equal width from `min` to `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightHistogram {
    /// The parameter's path in the network, as `conv1.weight`.
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub counts: Vec<u64>,
}

impl WeightHistogram {
    /// The histogram of `values`' finite entries.
    pub fn of(name: String, values: &[f32]) -> Self {
        let finite = || {
            values
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .map(f64::from)
        };
        let (min, max) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (min, max) = if min > max { (0.0, 0.0) } else { (min, max) };
        let width = (max - min) / BUCKETS as f64;
        let mut counts = vec![0u64; if width > 0.0 { BUCKETS } else { 1 }];
        let (mut sum, mut sum_squares) = (0.0, 0.0);
        for v in finite() {
            sum += v;
            sum_squares += v * v;
            let bucket = if width > 0.0 {
                (((v - min) / width) as usize).min(BUCKETS - 1)
            } else {
                0
            };
            counts[bucket] += 1;
        }
        Self {
            name,
            min,
            max,
            sum,
            sum_squares,
            counts,
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// As TensorBoard's `HistogramProto`: each bucket's right edge, the last one `max`.
    pub fn to_proto(&self) -> HistogramProto {
        let buckets = self.counts.len();
        let width = (self.max - self.min) / buckets as f64;
        let bucket_limit = (1..=buckets)
            .map(|i| {
                if i == buckets {
                    self.max
                } else {
                    self.min + width * i as f64
                }
            })
            .collect();
        HistogramProto {
            min: self.min,
            max: self.max,
            num: self.count() as f64,
            sum: self.sum,
            sum_squares: self.sum_squares,
            bucket_limit,
            bucket: self.counts.iter().map(|&c| c as f64).collect(),
        }
    }
}

/// The histogram of every parameter tensor of `network`, in the network's order.
pub fn weight_histograms(network: &Network) -> Vec<WeightHistogram> {
    let mut visitor = Collector::default();
    network.visit(&mut visitor);
    visitor.histograms
}

#[derive(Default)]
struct Collector {
    path: Vec<String>,
    histograms: Vec<WeightHistogram>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        // The network's variant (`Cnn`, `Mlp`) is not part of a parameter's name.
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        } else {
            self.path.push(String::new());
        }
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self
            .path
            .iter()
            .filter(|part| !part.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(".");
        let values = param
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_default();
        self.histograms.push(WeightHistogram::of(name, &values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::model::{Architecture, InputShape};

    #[test]
    fn buckets_cover_every_value_once() {
        let values: Vec<f32> = (0..=300).map(|i| i as f32 / 100.0 - 1.0).collect();
        let h = WeightHistogram::of("w".into(), &values);
        assert_eq!((h.min, h.max), (-1.0, 2.0));
        assert_eq!(h.counts.len(), BUCKETS);
        assert_eq!(h.count(), 301);
        assert_eq!(
            h.counts[BUCKETS - 1],
            11,
            "the maximum falls in the last bucket"
        );
        let proto = h.to_proto();
        assert_eq!(proto.bucket_limit.len(), BUCKETS);
        assert_eq!(*proto.bucket_limit.last().unwrap(), 2.0);
        assert!((proto.bucket_limit[0] - -0.9).abs() < 1e-12);
        assert!((proto.sum - values.iter().map(|&v| f64::from(v)).sum::<f64>()).abs() < 1e-9);
        // A constant tensor (zero biases) is one bucket; NaN is left out.
        let zeros = WeightHistogram::of("b".into(), &[0.0, 0.0, f32::NAN]);
        assert_eq!(
            (zeros.counts.clone(), zeros.min, zeros.max),
            (vec![2], 0.0, 0.0)
        );
        assert_eq!(zeros.to_proto().bucket_limit, vec![0.0]);
        let empty = WeightHistogram::of("e".into(), &[]);
        assert_eq!(empty.count(), 0);
    }

    #[test]
    fn every_parameter_of_the_network_is_named_and_counted() {
        let shape = InputShape {
            rows: 28,
            cols: 28,
            classes: 10,
            channels: 1,
        };
        let network = Network::new(Architecture::Cnn, shape, &BackendKind::Flex.device());
        let histograms = weight_histograms(&network);
        let names: Vec<&str> = histograms.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "dense1.weight",
                "dense1.bias",
                "dense2.weight",
                "dense2.bias",
                "output.weight",
                "output.bias"
            ]
        );
        let total: u64 = histograms.iter().map(WeightHistogram::count).sum();
        assert_eq!(total as usize, network.num_params());
    }
}
