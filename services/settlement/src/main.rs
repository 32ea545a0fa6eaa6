//! The `clearinghouse-settlement` binary: loads the layered configuration and runs the service
//! until a shutdown signal.

fn main() -> std::process::ExitCode {
    clearinghouse_platform::host::main("clearinghouse-settlement", |config, shutdown| async move {
        clearinghouse_settlement::start(config, shutdown)
            .await?
            .wait()
            .await
    })
}
