//! External tools and servers a test needs: missing outside CI is a skip, in CI a failure.

use std::process::Command;

/// Whether this run is CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports something a test needs and does not have: panics in CI (a skipped test there would
/// pass without checking anything), prints a visible skip line elsewhere.
pub fn unavailable(message: &str) {
    if in_ci() {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPING (not in CI): {message} ***\n");
}

/// True when every tool is installed. Missing in CI (CI=true) is a failure, never a skip.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    unavailable(&format!(
        "missing tools {missing:?}: install them with scripts/install-debian-deps.sh --test"
    ));
    false
}
