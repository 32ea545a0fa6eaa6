//! The `clearinghouse-fund-ledger` binary: loads the layered configuration and runs the service
//! until a shutdown signal.

fn main() -> std::process::ExitCode {
    clearinghouse_platform::host::main("clearinghouse-fund-ledger", |config, shutdown| async move {
        clearinghouse_fund_ledger::start(config, shutdown)
            .await?
            .wait()
            .await
    })
}
