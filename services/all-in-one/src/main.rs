//! `clearinghouse serve` hosts all four services in one process; `clearinghouse demo`
//! does so on a fresh demo database and walks through worked examples 1 and 2 as a
//! provincial platform would.

mod demo;

use clearinghouse_all_in_one::{Config, Stack};

fn main() -> std::process::ExitCode {
    let demo = std::env::args().nth(1).as_deref() == Some("demo");
    clearinghouse_platform::host::main(
        "clearinghouse",
        move |config: Config, shutdown| async move {
            if demo {
                demo::run(config).await
            } else {
                Stack::start(config, shutdown).await?.wait().await
            }
        },
    )
}
