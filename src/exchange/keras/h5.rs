//! The HDF5 files Keras writes (`model.weights.h5` inside a `.keras` file, `.weights.h5`,
//! legacy `.h5`), read from memory by the pure-Rust `hdf5-reader` under memory bounds: a
//! dataset is read only after its shape matched the one expected, into a buffer of that size,
//! and the reader's own allocations are capped.

use hdf5_reader::{Hdf5File, OpenOptions};

/// The largest object header (a group's or dataset's metadata) read: Keras writes a few KiB.
const MAX_OBJECT_HEADER_BYTES: usize = 1 << 20;

/// The first bytes of an HDF5 file (at offset 0, where h5py writes it).
pub(crate) const SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";

/// An HDF5 file opened from memory.
pub(crate) struct H5 {
    file: Hdf5File,
    /// The most one dataset may hold.
    max_read_bytes: usize,
}

impl H5 {
    /// Opens `bytes`; no dataset read may be larger than `max_read_bytes` or than the file
    /// (Keras does not compress weights).
    pub fn open(bytes: Vec<u8>, max_read_bytes: usize) -> Result<Self, String> {
        let max_read_bytes = max_read_bytes.min(bytes.len());
        let options = OpenOptions {
            chunk_cache_bytes: 0,
            max_chunk_bytes: max_read_bytes.max(1),
            max_read_bytes: max_read_bytes.max(1),
            max_object_header_bytes: MAX_OBJECT_HEADER_BYTES,
            ..OpenOptions::default()
        };
        let file = Hdf5File::from_vec_with_options(bytes, options)
            .map_err(|e| format!("not a readable HDF5 file ({e})"))?;
        Ok(Self {
            file,
            max_read_bytes,
        })
    }

    /// Whether a group exists at `path`.
    pub fn has_group(&self, path: &str) -> bool {
        self.file.group(path).is_ok()
    }

    /// The string attribute `name` of the group at `group` ("/" for the root), if present.
    pub fn string_attribute(&self, group: &str, name: &str) -> Result<Option<String>, String> {
        let group = self
            .file
            .group(group)
            .map_err(|e| format!("no group {group} ({e})"))?;
        let Ok(attribute) = group.attribute(name) else {
            return Ok(None);
        };
        attribute
            .read_string()
            .map(Some)
            .map_err(|e| format!("its attribute {name} is not a string ({e})"))
    }

    /// The list-of-strings attribute `name` of the group at `group`, if present.
    pub fn strings_attribute(
        &self,
        group: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let group = self
            .file
            .group(group)
            .map_err(|e| format!("no group {group} ({e})"))?;
        let Ok(attribute) = group.attribute(name) else {
            return Ok(None);
        };
        match (&attribute.decoded_strings, attribute.read_string()) {
            (Some(strings), _) => Ok(Some(strings.clone())),
            (None, Ok(one)) => Ok(Some(vec![one])),
            (None, Err(e)) => Err(format!(
                "{group}'s attribute {name} is not a list of names ({e})",
                group = group.name()
            )),
        }
    }

    /// The dimensions of the dataset at `path`, if there is one.
    pub fn dims(&self, path: &str) -> Option<Vec<usize>> {
        let dataset = self.file.dataset(path).ok()?;
        dataset
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect()
    }

    /// The float32 dataset at `path`, which must have exactly the dimensions `dims`.
    pub fn read_f32(&self, path: &str, dims: &[usize]) -> Result<Vec<f32>, String> {
        let dataset = self
            .file
            .dataset(path)
            .map_err(|e| format!("no weights at {path} ({e})"))?;
        let shape: Vec<u64> = dataset.shape().to_vec();
        let fits = shape.len() == dims.len()
            && shape
                .iter()
                .zip(dims)
                .all(|(&have, &want)| have == want as u64);
        if !fits {
            return Err(format!(
                "the weights at {path} have the shape {shape:?}, the model needs {dims:?}"
            ));
        }
        let count: usize = dims.iter().product();
        if count.saturating_mul(4) > self.max_read_bytes {
            return Err(format!(
                "the weights at {path} claim {count} values, more than the file can hold"
            ));
        }
        let mut values = vec![0f32; count];
        dataset
            .read_into(&mut values)
            .map_err(|e| format!("the weights at {path} cannot be read ({e})"))?;
        Ok(values)
    }
}
