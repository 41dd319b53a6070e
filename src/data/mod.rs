//! Data: IDX decoding, the MNIST files, downloading them, the image pipeline that prepares
//! pictures (`pipeline`), and batching for training.

pub mod batch;
pub mod class_folder;
pub mod dataset;
pub mod download;
pub mod idx;
pub mod image;
pub mod import;
pub mod mnist;
pub mod pipeline;

pub use mnist::{MnistFile, Split, SplitKind, load_split};
