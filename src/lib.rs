//! mnist-cnn: download, inspect, train and evaluate the classic MNIST CNN with burn on the CPU.
//!
//! Data flows one way: [`data`] (IDX decoding, download, batching) -> [`model`] (the network)
//! -> [`train`] (loop, history, checkpoints) -> [`evaluate`] (metrics) -> [`plot`] (PNG drawing).
//! The `cli` module only parses arguments and dispatches to these.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod fsutil;
pub mod inspect;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod plot_layers;
pub mod predict;
pub mod serve;
pub mod train;

pub use error::{Error, Result};
