//! The `clearinghouse-filing` binary: loads the layered configuration and runs the service
//! until a shutdown signal.

fn main() -> std::process::ExitCode {
    clearinghouse_platform::host::main("clearinghouse-filing", |config, shutdown| async move {
        clearinghouse_filing::start(config, shutdown)
            .await?
            .wait()
            .await
    })
}
