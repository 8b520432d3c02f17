//! Where cluster mode keeps a session in Redis (docs/ARCHITECTURE.md#cluster-mode). Slugs are
//! letters, digits, `-`, `_` and `.` (`actors::registry::validate_slug`), so they are safe in
//! key names and never contain the pattern characters of [`BUS_PATTERN`].

/// Every key and channel starts with this, so the service can share a Redis with others.
pub const PREFIX: &str = "rc:";
/// Every instance subscribes to every session's bus (see ARCHITECTURE for the cost).
pub const BUS_PATTERN: &str = "rc:bus:*";
/// Leases taken and stops asked, for every instance.
pub const CONTROL_CHANNEL: &str = "rc:ctl";

// The numbering and fencing counters outlive a session's last final by 7 days, its log by a
// day (the scripts in `super::scripts` set both).
/// Finals kept per session in the log (approximately: Redis trims whole nodes); older ones
/// are read from the database.
pub const LOG_MAX_LEN: usize = 1000;

/// The owner's token, `{instance}:{fence}`, expiring after `CLUSTER_LEASE_MS`.
pub fn lease(slug: &str) -> String {
    format!("{PREFIX}lease:{slug}")
}

/// Incremented by every take: the fencing number of the next token.
pub fn fence(slug: &str) -> String {
    format!("{PREFIX}fence:{slug}")
}

/// The highest `seq` committed.
pub fn seq(slug: &str) -> String {
    format!("{PREFIX}seq:{slug}")
}

/// The stream of committed finals, entry id `{seq}-0`.
pub fn log(slug: &str) -> String {
    format!("{PREFIX}finals:{slug}")
}

/// The owner's provider session (`super::provider_record`), for whoever takes over.
pub fn provider(slug: &str) -> String {
    format!("{PREFIX}provider:{slug}")
}

/// A provider record outlives its last write by this much: long enough for a takeover
/// after the owner died, short next to Gladia's own timeout of a session without audio.
pub const PROVIDER_RECORD_MS: u64 = 60_000;

/// The live channel: finals, partials and status frames.
pub fn bus(slug: &str) -> String {
    format!("{PREFIX}bus:{slug}")
}

/// The slug of a bus channel, `None` for any other channel.
pub fn slug_of_bus(channel: &str) -> Option<&str> {
    channel.strip_prefix("rc:bus:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_channel_names_its_session_and_matches_the_pattern() {
        let channel = bus("team.sync-1");
        assert_eq!(slug_of_bus(&channel), Some("team.sync-1"));
        assert!(channel.starts_with(BUS_PATTERN.trim_end_matches('*')));
        assert_eq!(slug_of_bus(CONTROL_CHANNEL), None);
        assert_eq!(slug_of_bus(&log("a")), None);
    }
}
