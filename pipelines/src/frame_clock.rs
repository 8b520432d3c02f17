//! RTMP audio timestamps to decoder stream time (buffer PTS).
//!
//! An RTMP timestamp is a 32-bit millisecond count chosen by the publisher: it may start
//! anywhere, wrap after 49.7 days, step backwards (publisher bugs, a reconnect on the same
//! decoder) or jump by any amount (a hostile or broken publisher, up to 2^32 - 1 ms). The PTS
//! must stay monotonic and must never wrap, so each timestamp is classified against the
//! previous one, and only a step that can be real time is followed:
//!
//! - forward by at most [`MAX_TIMESTAMP_STEP_MS`] on the 32-bit clock (its own wrap included):
//!   the PTS advances by that step;
//! - anything else (backwards, or farther than the bound either way, such as a 2^31 ms jump):
//!   a discontinuity, reported to the caller; the PTS advances by one frame.
//!
//! The PCM *length* never depends on the PTS (see `decode_pipeline`: nothing there inserts or
//! drops samples because of timestamps), so a discontinuity costs no audio
//! (docs/PROTOCOL.md#accepted-streams); it is reported so it is seen, not guessed at.

use gstreamer as gst;

/// The largest forward step followed as elapsed time. A publishing connection silent for 60 s
/// is closed (docs/PROTOCOL.md#hostile-input-and-limits), so within one publish two audio
/// messages are never further apart than that in real time: a larger step is not time that
/// passed.
pub const MAX_TIMESTAMP_STEP_MS: u32 = 60_000;

/// How a frame's RTMP timestamp related to the previous frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// The first frame, or a forward step within [`MAX_TIMESTAMP_STEP_MS`]: the PTS follows.
    Continuous,
    /// Backwards, or a jump beyond [`MAX_TIMESTAMP_STEP_MS`]: the PTS advanced by one frame
    /// instead.
    Discontinuity { previous_ms: u32, timestamp_ms: u32 },
}

/// The PTS of one frame and how its timestamp was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    pub pts: gst::ClockTime,
    pub timing: Timing,
}

/// Turns RTMP millisecond timestamps into monotonic buffer PTS.
pub(crate) struct FrameClock {
    pub frame_duration: gst::ClockTime,
    /// Last RTMP timestamp and the PTS it was given.
    last: Option<(u32, gst::ClockTime)>,
}

impl FrameClock {
    pub(crate) fn new(frame_duration: gst::ClockTime) -> Self {
        Self {
            frame_duration,
            last: None,
        }
    }

    pub(crate) fn tick(&mut self, timestamp_ms: u32) -> Tick {
        let tick = match self.last {
            // The first frame defines time zero, whatever the publisher's start value.
            None => Tick {
                pts: gst::ClockTime::ZERO,
                timing: Timing::Continuous,
            },
            Some((previous_ms, previous_pts)) => {
                // The distance forward on the 32-bit RTMP clock, which wraps by definition
                // (modular on purpose: 0xFFFF_FFF0 to 0x10 is 32 ms forward). Bounded below
                // before it becomes time, so no jump can wrap the PTS or run it backwards.
                let forward_ms = timestamp_ms.wrapping_sub(previous_ms);
                if forward_ms <= MAX_TIMESTAMP_STEP_MS {
                    Tick {
                        pts: previous_pts
                            .saturating_add(gst::ClockTime::from_mseconds(u64::from(forward_ms))),
                        timing: Timing::Continuous,
                    }
                } else {
                    Tick {
                        // Saturating: a u64 of nanoseconds is 584 years, but peers never pick
                        // how close to it a stream gets.
                        pts: previous_pts.saturating_add(self.frame_duration),
                        timing: Timing::Discontinuity {
                            previous_ms,
                            timestamp_ms,
                        },
                    }
                }
            }
        };
        self.last = Some((timestamp_ms, tick.pts));
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_NS: u64 = 23_219_954;

    fn clock() -> FrameClock {
        FrameClock::new(gst::ClockTime::from_nseconds(FRAME_NS))
    }

    fn ms(n: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(n)
    }

    fn frame() -> gst::ClockTime {
        gst::ClockTime::from_nseconds(FRAME_NS)
    }

    #[test]
    fn pts_is_relative_to_first_frame() {
        let mut c = clock();
        assert_eq!(c.tick(5_000).pts, gst::ClockTime::ZERO);
        assert_eq!(c.tick(5_023).pts, ms(23));
        let tick = c.tick(5_046);
        assert_eq!((tick.pts, tick.timing), (ms(46), Timing::Continuous));
    }

    #[test]
    fn pts_survives_the_u32_wrap_of_rtmp_time() {
        let mut c = clock();
        c.tick(u32::MAX - 10);
        let tick = c.tick(12);
        assert_eq!((tick.pts, tick.timing), (ms(23), Timing::Continuous));
    }

    #[test]
    fn backwards_timestamps_stay_monotonic_and_are_reported() {
        let mut c = clock();
        c.tick(1_000);
        c.tick(1_023);
        let tick = c.tick(900);
        assert_eq!(tick.pts, ms(23) + frame());
        assert_eq!(
            tick.timing,
            Timing::Discontinuity {
                previous_ms: 1_023,
                timestamp_ms: 900
            }
        );
        // Continues from the new anchor.
        assert_eq!(c.tick(923).pts, tick.pts + ms(23));
    }

    #[test]
    fn the_largest_step_is_followed_and_one_more_ms_is_a_discontinuity() {
        let mut c = clock();
        c.tick(0);
        let tick = c.tick(MAX_TIMESTAMP_STEP_MS);
        assert_eq!(
            (tick.pts, tick.timing),
            (ms(u64::from(MAX_TIMESTAMP_STEP_MS)), Timing::Continuous)
        );
        let before = tick.pts;
        let tick = c.tick(2 * MAX_TIMESTAMP_STEP_MS + 1);
        assert_eq!(tick.pts, before + frame());
        assert!(matches!(tick.timing, Timing::Discontinuity { .. }));
    }

    /// The jumps that used to wrap: 2^31 ms read as a step backwards, 2^31 - 1 ms as 24.8 days
    /// of stream time. Both are now one frame, in either direction and across the wrap.
    #[test]
    fn jumps_of_2_pow_31_never_wrap_or_leap() {
        for (start, jump) in [
            (0_u32, 1_u32 << 31),
            (0, (1 << 31) - 1),
            (0, (1 << 31) + 1),
            (u32::MAX - 5, 1 << 31),
            (1_000, u32::MAX),
            (1 << 31, 1 << 31),
        ] {
            let mut c = clock();
            c.tick(start);
            let next = c.tick(start.wrapping_add(23));
            let tick = c.tick(start.wrapping_add(23).wrapping_add(jump));
            assert_eq!(tick.pts, next.pts + frame(), "from {start} by {jump}");
            assert!(
                matches!(tick.timing, Timing::Discontinuity { .. }),
                "from {start} by {jump}"
            );
        }
    }

    #[test]
    fn alternating_hostile_jumps_only_ever_add_a_frame_each() {
        let mut c = clock();
        let mut last = c.tick(0).pts;
        for i in 0..1_000_u32 {
            let timestamp = if i % 2 == 0 { 1 << 31 } else { 0 };
            let tick = c.tick(timestamp);
            assert_eq!(tick.pts, last + frame());
            last = tick.pts;
        }
    }
}
