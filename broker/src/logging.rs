//! Structured logs (`tracing`) to stderr; stdout is kept for machine-readable lines such as the
//! listening address.

/// Installs the subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: log files stay greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
