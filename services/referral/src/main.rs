//! The `clearinghouse-referral` binary: loads the layered configuration and runs the service
//! until a shutdown signal.

fn main() -> std::process::ExitCode {
    clearinghouse_platform::host::main("clearinghouse-referral", |config, shutdown| async move {
        clearinghouse_referral::start(config, shutdown)
            .await?
            .wait()
            .await
    })
}
