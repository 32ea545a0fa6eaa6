//! Generates the contract's Rust types from `proto/` with a vendored `protoc`, so a fresh
//! machine needs no protobuf compiler of its own.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "clearinghouse/filing/v1/filing.proto",
        "clearinghouse/referral/v1/referral.proto",
        "clearinghouse/settlement/v1/settlement.proto",
        "clearinghouse/ledger/v1/ledger.proto",
        "clearinghouse/events/v1/events.proto",
        "clearinghouse/audit/v1/audit.proto",
    ]
    .map(|f| root.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("clearinghouse_descriptor.bin"))
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}
