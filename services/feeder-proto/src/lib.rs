//! Protobuf and gRPC types for Feeder, generated at build time from `proto/` by protox
//! (no system `protoc`).
//!
//! - [`v1`]: the device contract (`feeder.v1`): `Ingest` client, `SignedFrame`, `Frame`...
//! - [`pipeline`]: Feeder's own Kafka record formats (`feeder.pipeline.v1`).
//! - [`raw`]: the edge's server side of `feeder.v1.Ingest`, which receives each
//!   `SignedFrame` as undecoded bytes. `RawPushRequest` is wire-identical to `PushRequest`
//!   (field 1, repeated, length-delimited), so devices see no difference, and the edge
//!   keeps the exact bytes a device signed and sent.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

pub mod v1 {
    tonic::include_proto!("feeder.v1");
}

pub mod pipeline {
    tonic::include_proto!("feeder.pipeline.v1");
}

pub mod raw {
    /// `PushRequest` with its frames left as bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawPushRequest {
        #[prost(bytes = "bytes", repeated, tag = "1")]
        pub frames: Vec<bytes::Bytes>,
    }

    include!(concat!(env!("OUT_DIR"), "/raw_server/feeder.v1.Ingest.rs"));
}

mod estimate;
mod reading;

/// Encoded `FileDescriptorSet` of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/feeder_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn raw_push_request_is_wire_compatible_with_push_request() {
        let frame = v1::SignedFrame {
            device_id: "mtr-1".into(),
            seq: 3,
            key_id: "k1".into(),
            payload: vec![8, 1].into(),
            signature: vec![0u8; 64].into(),
        };
        let req = v1::PushRequest {
            frames: vec![frame.clone(), frame.clone()],
        };
        let raw = raw::RawPushRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(raw.frames.len(), 2);
        assert_eq!(
            v1::SignedFrame::decode(raw.frames[1].clone()).unwrap(),
            frame
        );
        // and back: raw bytes re-encode to the same request
        assert_eq!(raw.encode_to_vec(), req.encode_to_vec());
    }
}
