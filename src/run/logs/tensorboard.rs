//! TensorBoard event files: the few messages of TensorFlow's `event.proto` and `summary.proto`
//! that a run needs, declared for prost (no protoc step), and the TFRecord framing that holds
//! them (a little-endian length, the masked CRC-32C of the length, the bytes, their masked
//! CRC-32C).
//!
//! The field numbers are TensorFlow's: `Event` (`wall_time` 1, `step` 2, `file_version` 3,
//! `summary` 5), `Summary.Value` (`tag` 1, `simple_value` 2, `image` 4, `histo` 5), `Image`
//! and `HistogramProto` as in `summary.proto`. TensorBoard reads these "legacy" values as
//! scalars, images and histograms; `.ci/tensorboard` checks that with its own reader.

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::fsutil::open_regular;

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 5")]
    pub what: Option<event::What>,
}

pub mod event {
    /// What an [`Event`](super::Event) carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of every file: `brain.Event:2`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary`: tagged values of one step.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(oneof = "value::Kind", tags = "2, 4, 5")]
    pub kind: Option<value::Kind>,
}

pub mod value {
    /// The kinds of value a run writes.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// A scalar (TensorBoard's scalars are 32-bit floats).
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "4")]
        Image(super::Image),
        #[prost(message, tag = "5")]
        Histo(super::HistogramProto),
    }
}

/// `tensorflow.Summary.Image`: an encoded picture (PNG here).
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grayscale, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorflow.HistogramProto`: bucket `i` counts the values up to `bucket_limit[i]` (and
/// above the previous limit).
#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    #[prost(double, tag = "1")]
    pub min: f64,
    #[prost(double, tag = "2")]
    pub max: f64,
    #[prost(double, tag = "3")]
    pub num: f64,
    #[prost(double, tag = "4")]
    pub sum: f64,
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// The version string TensorBoard expects in a file's first event.
pub const FILE_VERSION: &str = "brain.Event:2";

impl Event {
    /// The first event of a file.
    pub fn file_version(wall_time: f64) -> Self {
        Event {
            wall_time,
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.into())),
        }
    }

    /// One summary of `values` at `step`.
    pub fn summary(wall_time: f64, step: usize, values: Vec<Value>) -> Self {
        Event {
            wall_time,
            step: i64::try_from(step).unwrap_or(i64::MAX),
            what: Some(event::What::Summary(Summary { value: values })),
        }
    }

    /// The summary's values (none for the file-version event).
    pub fn values(&self) -> &[Value] {
        match &self.what {
            Some(event::What::Summary(summary)) => &summary.value,
            _ => &[],
        }
    }
}

impl Value {
    pub fn scalar(tag: &str, value: f64) -> Self {
        Value {
            tag: tag.into(),
            kind: Some(value::Kind::SimpleValue(value as f32)),
        }
    }

    pub fn image(tag: &str, image: Image) -> Self {
        Value {
            tag: tag.into(),
            kind: Some(value::Kind::Image(image)),
        }
    }

    pub fn histogram(tag: &str, histogram: HistogramProto) -> Self {
        Value {
            tag: tag.into(),
            kind: Some(value::Kind::Histo(histogram)),
        }
    }

    /// The scalar, if this value is one.
    pub fn as_scalar(&self) -> Option<f32> {
        match self.kind {
            Some(value::Kind::SimpleValue(v)) => Some(v),
            _ => None,
        }
    }
}

/// CRC-32C masked as TFRecord stores it, so that a CRC of data holding CRCs stays well mixed.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The events as one TFRecord file's bytes.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        let data = event.encode_to_vec();
        let length = (data.len() as u64).to_le_bytes();
        out.extend_from_slice(&length);
        out.extend_from_slice(&masked_crc(&length).to_le_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(&masked_crc(&data).to_le_bytes());
    }
    out
}

/// Decodes a whole event file, checking every record's checksums. `path` names the file in
/// errors. (TensorBoard has its own reader; this one is for this tool's tests and checks.)
pub fn decode(bytes: &[u8], path: &Path) -> Result<Vec<Event>> {
    let corrupt = |offset: usize, what: &str| {
        Error::corrupt(
            path,
            format!("not a TensorBoard event file ({what} at byte {offset})"),
        )
    };
    let mut events = Vec::new();
    let mut rest = bytes;
    let mut offset = 0;
    while !rest.is_empty() {
        let (header, after) = rest
            .split_at_checked(12)
            .ok_or_else(|| corrupt(offset, "a truncated record header"))?;
        let (length, crc) = header.split_at(8);
        if masked_crc(length).to_le_bytes() != crc {
            return Err(corrupt(offset, "a bad length checksum"));
        }
        let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
        let length = usize::try_from(length)
            .ok()
            .filter(|&n| n.checked_add(4).is_some_and(|n| n <= after.len()))
            .ok_or_else(|| corrupt(offset, "a truncated record"))?;
        let (data, after) = after.split_at(length);
        let (crc, after) = after.split_at(4);
        if masked_crc(data).to_le_bytes() != crc {
            return Err(corrupt(offset, "a bad data checksum"));
        }
        let event = Event::decode(data).map_err(|_| corrupt(offset, "an undecodable event"))?;
        events.push(event);
        offset += 12 + length + 4;
        rest = after;
    }
    Ok(events)
}

/// Reads and decodes the event file at `path`; at most `limit` bytes are read.
pub fn read(path: &Path, limit: u64) -> Result<Vec<Event>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::corrupt(
            path,
            format!("larger than the {limit} bytes an event file of this tool can hold"),
        ));
    }
    decode(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let events = vec![
            Event::file_version(1.5),
            Event::summary(2.0, 3, vec![Value::scalar("loss", 0.25)]),
            Event::summary(
                2.5,
                4,
                vec![Value::histogram(
                    "w",
                    HistogramProto {
                        min: -1.0,
                        max: 1.0,
                        num: 2.0,
                        sum: 0.0,
                        sum_squares: 2.0,
                        bucket_limit: vec![0.0, 1.0],
                        bucket: vec![1.0, 1.0],
                    },
                )],
            ),
        ];
        let bytes = encode(&events);
        let path = Path::new("events");
        assert_eq!(decode(&bytes, path).unwrap(), events);
        assert_eq!(
            decode(&bytes, path).unwrap()[1].values()[0].as_scalar(),
            Some(0.25)
        );
        // TFRecord's framing, byte for byte: the length, its masked CRC, the data, its CRC.
        let first = Event::file_version(1.5).encode_to_vec();
        assert_eq!(bytes[..8], (first.len() as u64).to_le_bytes());
        for cut in [1, 11, 13, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], path).is_err(), "truncated at {cut}");
        }
        for flip in [0, 9, 14, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x10;
            let error = decode(&damaged, path).unwrap_err().to_string();
            assert!(error.contains("not a TensorBoard event file"), "{error}");
        }
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // crc32c("") = 0 and crc32c("a") = 0xc1d04330 (RFC 3720's CRC); masked as TensorFlow's
        // crc32c.h does, ((crc >> 15) | (crc << 17)) + 0xa282ead8, worked out by hand.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        assert_eq!(masked_crc(b"a"), 0x28e4_6e78);
    }
}
