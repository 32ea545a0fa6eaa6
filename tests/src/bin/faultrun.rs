//! The fault-injection run from the command line, for long runs:
//! `cargo run -p clearinghouse-tests --bin clearinghouse-faultrun -- --claims 100000`
//! (`--clients 8`, `--fault-every 4` seconds, `--persons 40`, `--faults "kill broker,stop
//! postgres"` to apply only these kinds, `--min-faults 50` to apply at least so many).
//! Exits non-zero when a check fails. Needs `scripts/setup.sh` first (PostgreSQL, the nisshi broker).

use std::time::Duration;

use clearinghouse_tests::faultrun::{Options, fault_run};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let defaults = Options::default();
    let options = Options {
        claims: value("--claims").map_or(defaults.claims, |v| v as usize),
        clients: value("--clients").map_or(defaults.clients, |v| v as usize),
        fault_every: value("--fault-every").map_or(defaults.fault_every, Duration::from_secs),
        persons: value("--persons").map_or(defaults.persons, |v| v as usize),
        min_faults: value("--min-faults").map_or(defaults.min_faults, |v| v as usize),
        kinds: args
            .iter()
            .position(|a| a == "--faults")
            .and_then(|i| args.get(i + 1))
            .map_or(defaults.kinds, |k| {
                k.split(',').map(|k| k.trim().to_string()).collect()
            }),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faultrun: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("fault run: {options:?}");
    match runtime.block_on(fault_run(options)) {
        Ok(report) => {
            println!("{report}");
            if report.holds() {
                println!("every check held");
                std::process::ExitCode::SUCCESS
            } else {
                println!("CHECKS FAILED");
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("faultrun: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
