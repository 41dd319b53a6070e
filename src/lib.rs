//! mnist-cnn: download, inspect, train and evaluate the classic MNIST CNN with burn.
//!
//! Data flows one way: [`data`] (IDX decoding, download, import, batching) -> [`model`] (the
//! networks and their fused [`kernels`]) -> [`train`] (the loop, writing a [`run`]: manifest,
//! history, checkpoints) -> [`evaluate`] (metrics) -> [`plot`] (PNG drawing). [`predict`] and
//! [`bench`] use trained or fresh networks. The command line (`src/main.rs`, `src/cli/`) is a
//! client of this library; ARCHITECTURE.md maps the modules.

pub mod backend;
pub mod bench;
pub mod choice;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod exchange;
pub mod fsutil;
pub mod inspect;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod predict;
pub mod run;
pub mod serve;
pub mod train;

pub use error::{Error, Result};
