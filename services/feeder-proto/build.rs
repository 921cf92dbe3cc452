//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no system `protoc`
//! is needed, then generates prost messages and tonic stubs.
//!
//! The edge's server stub is generated separately (see `raw_server`) so that it receives
//! each `SignedFrame` as the exact bytes the device sent: those bytes are what the
//! quarantine dataset and the provenance log keep.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script reused from another checkout must not see its paths.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("feeder/v1/ingest.proto"),
        root.join("feeder/v1/frame.proto"),
        root.join("feeder/pipeline/v1/records.proto"),
        root.join("feeder/pipeline/v1/cohorts.proto"),
        root.join("feeder/pipeline/v1/stream_state.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set serves gRPC reflection.
    std::fs::write(
        out.join("feeder_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .bytes(".")
        // in key order, so a tally's bytes are the same every time (golden tests)
        .btree_map(".feeder.pipeline.v1.CohortTally.cohorts")
        .compile_fds(fds)?;

    // Server stub for feeder.v1.Ingest taking raw frames; same routes, wire-compatible types.
    let method = |name: &str, route: &str, streaming: bool| {
        let b = tonic_prost_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::raw::RawPushRequest")
            .output_type("crate::v1::PushResponse")
            .codec_path("tonic_prost::ProstCodec");
        if streaming {
            b.client_streaming().server_streaming().build()
        } else {
            b.build()
        }
    };
    let service = tonic_prost_build::manual::Service::builder()
        .name("Ingest")
        .package("feeder.v1")
        .method(method("push", "Push", false))
        .method(method("push_stream", "PushStream", true))
        .build();
    std::fs::create_dir_all(out.join("raw_server"))?;
    tonic_prost_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out.join("raw_server"))
        .compile(&[service]);
    Ok(())
}
