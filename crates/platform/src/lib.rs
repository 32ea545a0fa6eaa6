//! Plumbing every clearinghouse service shares: layered configuration, telemetry, the
//! Postgres pool and migrations, gRPC serving with health and reflection, Prometheus
//! metrics, graceful shutdown and the gRPC error conventions.

pub mod access;
pub mod audit;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod host;
pub mod layer;
pub mod metrics;
pub mod partitions;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;
pub mod unary;

/// Every binary linking the platform (the services, the all-in-one host, the benchmarks)
/// allocates with mimalloc: a claim's request, parsing and answer make many small
/// allocations across threads, where glibc's malloc took a sixth of the process's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
