fn main() -> std::process::ExitCode {
    clearinghouse_platform::host::main("clearinghouse-referral", |config, shutdown| async move {
        clearinghouse_referral::start(config, shutdown)
            .await?
            .wait()
            .await
    })
}
