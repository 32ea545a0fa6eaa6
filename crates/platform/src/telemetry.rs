//! Tracing logs: JSON or human-readable, filtered by `RUST_LOG` or the configured filter.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Log lines as JSON (for log shippers) instead of text.
    pub json: bool,
    /// The log filter when `RUST_LOG` is not set (`info`, `warn,clearinghouse=debug` …).
    pub log_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            json: false,
            log_filter: "info".into(),
        }
    }
}

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(config: &TelemetryConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if config.json {
        registry.with(fmt::layer().json()).try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    // Already installed (several services in one process, or tests): keep the first.
    let _ = result;
}

/// Masks an identity number or a name for logs: keeps the first and last characters.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    match chars.len() {
        0 => String::new(),
        1 | 2 => "*".repeat(chars.len()),
        n if n <= 6 => format!("{}{}", chars[0], "*".repeat(n - 1)),
        n => format!(
            "{}{}{}",
            chars[..3].iter().collect::<String>(),
            "*".repeat(n - 5),
            chars[n - 2..].iter().collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_id_numbers_and_names() {
        assert_eq!(super::mask("11010519491231002X"), "110*************2X");
        assert_eq!(super::mask("张三"), "**");
        assert_eq!(super::mask("欧阳娜娜"), "欧***");
    }
}
