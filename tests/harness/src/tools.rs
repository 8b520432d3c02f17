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

#[cfg(test)]
mod tests {
    use super::*;

    /// The CI rule itself: the same missing tool is a skip outside CI and a failure in it.
    /// One test, so no other test of this binary sees `CI` change.
    #[test]
    fn a_missing_tool_is_a_skip_outside_ci_and_a_failure_in_ci() {
        let missing = ["no-such-tool-3c9e1f"];
        let outer = std::env::var_os("CI");
        std::env::set_var("CI", "false");
        assert!(!require_tools(&missing));
        assert!(require_tools(&["sh"]));
        std::env::set_var("CI", "true");
        let in_ci = std::panic::catch_unwind(|| require_tools(&missing));
        match outer {
            Some(value) => std::env::set_var("CI", value),
            None => std::env::remove_var("CI"),
        }
        assert!(in_ci.is_err(), "a missing tool must fail the test in CI");
    }
}
