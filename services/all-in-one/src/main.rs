//! `clearinghouse serve` hosts all four services in one process; `clearinghouse demo
//! [pki-dir]` does so on a fresh demo database and walks through the worked examples as
//! provincial platforms would, each with its own certificate; `clearinghouse dev-certs
//! <dir>` creates a development CA and certificates for our services, the national
//! platform, an operator and every province.

mod demo;

use std::path::PathBuf;

use clearinghouse_all_in_one::{Config, Stack};
use clearinghouse_domain::Region;
use clearinghouse_testkit::pki::{DevPki, dev_identities};

fn dev_certs(dir: PathBuf) -> std::process::ExitCode {
    if dir.join("ca.pem").exists() {
        println!("development certificates already in {}", dir.display());
        return std::process::ExitCode::SUCCESS;
    }
    let provinces: Vec<String> = Region::all()
        .filter(|r| r.is_province())
        .map(|r| r.to_string())
        .collect();
    let identities = dev_identities(&provinces);
    let pairs: Vec<(&str, &str)> = identities
        .iter()
        .map(|(f, i)| (f.as_str(), i.as_str()))
        .collect();
    match DevPki::generate().and_then(|pki| pki.write(&dir, &pairs)) {
        Ok(()) => {
            println!(
                "development CA and {} certificates written to {}",
                pairs.len(),
                dir.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clearinghouse: cannot write certificates: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional = |i: usize, default: &str| {
        args.get(i)
            .filter(|a| !a.starts_with("--"))
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    match args.first().map(String::as_str) {
        Some("dev-certs") => dev_certs(positional(1, ".dev-pki")),
        Some("demo") => {
            let pki = positional(1, ".dev-pki");
            clearinghouse_platform::host::main(
                "clearinghouse",
                move |config: Config, _shutdown| async move { demo::run(config, &pki).await },
            )
        }
        _ => clearinghouse_platform::host::main(
            "clearinghouse",
            |config: Config, shutdown| async move { Stack::start(config, shutdown).await?.wait().await },
        ),
    }
}
