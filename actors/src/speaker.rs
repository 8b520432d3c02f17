//! Active-speaker attribution (docs/PROTOCOL.md#active-speaker): the report nearest before the end of the
//! utterance, if it is no older than the TTL; else the provider's speaker; else the room.

use std::collections::VecDeque;
use std::sync::Arc;

/// Reports kept per session. Clients send about two a second; this covers minutes of
/// meeting even with many participants, more than any utterance needs.
const MAX_REPORTS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerReport {
    pub identity: Arc<str>,
    pub name: Arc<str>,
    /// When the client saw this speaker active, ms since the epoch.
    pub timestamp_ms: i64,
}

#[derive(Debug, Default)]
pub struct SpeakerTimeline {
    reports: VecDeque<SpeakerReport>,
}

/// Who a transcript is attributed to: `(speaker, speakerId)`.
pub type Attribution = (Arc<str>, Arc<str>);

impl SpeakerTimeline {
    pub fn record(&mut self, report: SpeakerReport) {
        // Keep the deque ordered by time; reports arrive nearly in order, so this is O(1) usually.
        let at = self
            .reports
            .iter()
            .rposition(|r| r.timestamp_ms <= report.timestamp_ms)
            .map_or(0, |i| i + 1);
        self.reports.insert(at, report);
        if self.reports.len() > MAX_REPORTS {
            self.reports.pop_front();
        }
    }

    /// Attribution for speech that ended at `ended_at_ms`.
    pub fn attribute(
        &self,
        ended_at_ms: i64,
        ttl_ms: i64,
        provider_speaker: Option<&str>,
    ) -> Attribution {
        let reported = self
            .reports
            .iter()
            .rev()
            .find(|r| r.timestamp_ms <= ended_at_ms)
            .filter(|r| ended_at_ms - r.timestamp_ms <= ttl_ms);
        match (reported, provider_speaker) {
            (Some(r), _) => (r.name.clone(), r.identity.clone()),
            (None, Some(p)) => (p.into(), p.into()),
            (None, None) => ("room".into(), "room".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(identity: &str, name: &str, t: i64) -> SpeakerReport {
        SpeakerReport {
            identity: identity.into(),
            name: name.into(),
            timestamp_ms: t,
        }
    }

    fn who(a: Attribution) -> (String, String) {
        (a.0.to_string(), a.1.to_string())
    }

    #[test]
    fn nearest_report_before_the_end_wins() {
        let mut t = SpeakerTimeline::default();
        t.record(report("u1", "Alice", 1_000));
        t.record(report("u2", "Bob", 2_000));
        t.record(report("u1", "Alice", 3_000));
        assert_eq!(
            who(t.attribute(2_500, 3_000, None)),
            ("Bob".into(), "u2".into())
        );
        assert_eq!(
            who(t.attribute(3_000, 3_000, None)),
            ("Alice".into(), "u1".into())
        );
        assert_eq!(
            who(t.attribute(1_500, 3_000, None)),
            ("Alice".into(), "u1".into())
        );
    }

    #[test]
    fn stale_reports_fall_back_to_provider_then_room() {
        let mut t = SpeakerTimeline::default();
        t.record(report("u1", "Alice", 1_000));
        assert_eq!(
            who(t.attribute(4_001, 3_000, Some("speaker 0"))),
            ("speaker 0".into(), "speaker 0".into())
        );
        assert_eq!(
            who(t.attribute(4_001, 3_000, None)),
            ("room".into(), "room".into())
        );
        assert_eq!(
            who(t.attribute(4_000, 3_000, None)),
            ("Alice".into(), "u1".into()),
            "TTL is inclusive"
        );
        assert_eq!(
            who(t.attribute(500, 3_000, None)),
            ("room".into(), "room".into()),
            "no report before the end"
        );
    }

    #[test]
    fn out_of_order_reports_are_placed_in_time() {
        let mut t = SpeakerTimeline::default();
        t.record(report("u2", "Bob", 2_000));
        t.record(report("u1", "Alice", 1_000));
        assert_eq!(
            who(t.attribute(1_500, 3_000, None)),
            ("Alice".into(), "u1".into())
        );
        assert_eq!(
            who(t.attribute(2_100, 3_000, None)),
            ("Bob".into(), "u2".into())
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = SpeakerTimeline::default();
        for i in 0..10_000 {
            t.record(report("u", "U", i));
        }
        assert_eq!(t.reports.len(), MAX_REPORTS);
    }
}
