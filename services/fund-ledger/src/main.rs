fn main() -> std::process::ExitCode {
    clearinghouse_platform::host::main("clearinghouse-fund-ledger", |config, shutdown| async move {
        clearinghouse_fund_ledger::start(config, shutdown)
            .await?
            .wait()
            .await
    })
}
