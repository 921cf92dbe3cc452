//! The open-loop timeline, with no I/O and no clock: time is a parameter.
//!
//! A closed-loop generator sends the next request when a slot frees up, so a slow
//! receiver slows the generator down and the requests that *would* have queued are never
//! measured ("coordinated omission"). Here requests are due on a fixed timeline, one
//! every `frames_per_request / rate` seconds within each [`Segment`], whatever the
//! receiver does:
//!
//! - latency is measured from a slot's *intended* time, so a request that starts late
//!   because the generator or the receiver fell behind carries that delay;
//! - a slot that is due while `max_in_flight` calls are out cannot start: it is counted
//!   `late` and dropped, never sent later in silence (which would turn open loop back
//!   into closed loop while still reporting the offered rate).

use std::time::Duration;

/// One stretch of the timeline at a constant offered rate (frames/s; 0 is a pause).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub len: Duration,
    pub frames_per_sec: f64,
}

/// A request that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Position on the whole timeline, from 0.
    pub index: u64,
    /// When it should start, from the start of the run.
    pub intended: Duration,
    /// The segment it belongs to.
    pub segment: usize,
}

/// What the driver should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start this request now.
    Send(Slot),
    /// Nothing is due before this offset from the start.
    Wait(Duration),
    /// The timeline is over.
    Done,
}

/// The timeline and its lateness accounting.
#[derive(Debug, Clone)]
pub struct Schedule {
    segments: Vec<Segment>,
    frames_per_request: u64,
    /// The next slot: its segment, that segment's start, and its number in the segment.
    seg: usize,
    seg_start: Duration,
    k: u64,
    index: u64,
    late: Vec<u64>,
    sent: Vec<u64>,
}

impl Schedule {
    /// `frames_per_request` is at least 1 (0 is taken as 1).
    pub fn new(segments: Vec<Segment>, frames_per_request: usize) -> Self {
        let n = segments.len();
        Self {
            segments,
            frames_per_request: frames_per_request.max(1) as u64,
            seg: 0,
            seg_start: Duration::ZERO,
            k: 0,
            index: 0,
            late: vec![0; n],
            sent: vec![0; n],
        }
    }

    /// The next slot's intended time and segment, moving past exhausted segments.
    fn peek(&mut self) -> Option<(Duration, usize)> {
        while let Some(s) = self.segments.get(self.seg) {
            if s.frames_per_sec > 0.0 && s.frames_per_sec.is_finite() {
                let every = self.frames_per_request as f64 / s.frames_per_sec;
                let at = Duration::try_from_secs_f64(self.k as f64 * every).unwrap_or(s.len);
                if at < s.len {
                    return Some((self.seg_start + at, self.seg));
                }
            }
            self.seg_start += s.len;
            self.seg += 1;
            self.k = 0;
        }
        None
    }

    fn advance(&mut self) {
        self.k += 1;
        self.index += 1;
    }

    /// What to do at `now` (from the start) with `in_flight` calls out of at most
    /// `max_in_flight`. Every due slot that cannot start is counted late and skipped.
    pub fn poll(&mut self, now: Duration, in_flight: usize, max_in_flight: usize) -> Next {
        loop {
            let Some((intended, segment)) = self.peek() else {
                return Next::Done;
            };
            if intended > now {
                return Next::Wait(intended);
            }
            let slot = Slot {
                index: self.index,
                intended,
                segment,
            };
            self.advance();
            if in_flight < max_in_flight {
                self.sent[segment] += 1;
                return Next::Send(slot);
            }
            self.late[segment] += 1;
        }
    }

    /// Requests dropped as late, per segment.
    pub fn late(&self) -> &[u64] {
        &self.late
    }

    /// Requests started, per segment.
    pub fn sent(&self) -> &[u64] {
        &self.sent
    }

    pub fn frames_per_request(&self) -> u64 {
        self.frames_per_request
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Where segment `i` starts, from the start of the run.
    pub fn segment_start(&self, i: usize) -> Duration {
        self.segments.iter().take(i).map(|s| s.len).sum()
    }

    /// The whole timeline's length.
    pub fn len(&self) -> Duration {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len().is_zero()
    }
}

/// Latency of a call answered at `answered` (from the start) whose slot was due at
/// `intended`: the queueing before it started counts, as the device would see it.
pub fn latency_from_intended(intended: Duration, answered: Duration) -> Duration {
    answered.saturating_sub(intended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn seg(secs: u64, rate: f64) -> Segment {
        Segment {
            len: Duration::from_secs(secs),
            frames_per_sec: rate,
        }
    }

    /// Polls at every due time with free slots: the intended times, in order.
    fn all_intended(mut s: Schedule) -> Vec<(Duration, usize)> {
        let mut out = Vec::new();
        let mut now = Duration::ZERO;
        loop {
            match s.poll(now, 0, 1) {
                Next::Send(slot) => out.push((slot.intended, slot.segment)),
                Next::Wait(t) => now = t,
                Next::Done => return out,
            }
        }
    }

    #[test]
    fn slots_are_evenly_spaced_per_segment_and_pauses_send_nothing() {
        // 100 frames/s in requests of 10: one every 100 ms; then a 1 s pause; then 20/s
        let s = Schedule::new(vec![seg(1, 100.0), seg(1, 0.0), seg(1, 20.0)], 10);
        let got = all_intended(s);
        let want: Vec<(Duration, usize)> = (0..10)
            .map(|i| (ms(100 * i), 0))
            .chain([(ms(2000), 2), (ms(2500), 2)])
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_is_sent_before_its_time_and_a_late_poll_catches_up() {
        let mut s = Schedule::new(vec![seg(1, 100.0)], 10);
        assert_eq!(
            s.poll(ms(0), 0, 8),
            Next::Send(Slot {
                index: 0,
                intended: ms(0),
                segment: 0
            })
        );
        assert_eq!(s.poll(ms(50), 1, 8), Next::Wait(ms(100)));
        // the driver woke 250 ms late with free slots: every due slot starts now, each
        // keeping its own intended time (its latency will carry the delay)
        let mut caught = Vec::new();
        while let Next::Send(slot) = s.poll(ms(350), 1, 8) {
            caught.push(slot.intended);
        }
        assert_eq!(caught, [ms(100), ms(200), ms(300)]);
        assert_eq!(s.late(), [0]);
    }

    #[test]
    fn due_slots_with_no_free_slot_are_late_not_delayed() {
        let mut s = Schedule::new(vec![seg(1, 100.0), seg(1, 100.0)], 10);
        assert!(matches!(s.poll(ms(0), 0, 2), Next::Send(_)));
        assert!(matches!(s.poll(ms(100), 1, 2), Next::Send(_)));
        // both calls stay out for 1.2 s: slots at 200..=1200 ms cannot start
        assert_eq!(s.poll(ms(1200), 2, 2), Next::Wait(ms(1300)));
        assert_eq!(s.late(), [8, 3]);
        // a call returned: the next slot starts on time, the skipped ones are not resent
        assert_eq!(
            s.poll(ms(1300), 1, 2),
            Next::Send(Slot {
                index: 13,
                intended: ms(1300),
                segment: 1
            })
        );
        assert_eq!(s.sent(), [2, 1]);
        // 1000, 1100 and 1200 ms were late too
        let mut now = ms(1300);
        while let Next::Wait(t) | Next::Send(Slot { intended: t, .. }) = s.poll(now, 0, 2) {
            now = t;
        }
        // every slot of the timeline is either sent or late, exactly once
        let total: u64 = s.sent().iter().chain(s.late()).sum();
        assert_eq!(total, 20);
    }

    #[test]
    fn latency_from_the_intended_time_counts_the_queue_a_closed_loop_hides() {
        // one server answering in 1 ms, stalled from 1 s to 2 s; 100 requests/s for 3 s,
        // room for 1000 calls in flight so nothing is dropped
        let mut s = Schedule::new(vec![seg(3, 100.0)], 1);
        let (mut open_loop, mut per_call) = (Vec::new(), Vec::new());
        let mut server_free = Duration::ZERO;
        let mut now = Duration::ZERO;
        loop {
            match s.poll(now, 0, 1000) {
                Next::Send(slot) => {
                    let start = now.max(server_free);
                    let start = if (ms(1000)..ms(2000)).contains(&start) {
                        ms(2000)
                    } else {
                        start
                    };
                    let answered = start + ms(1);
                    server_free = answered;
                    open_loop.push(latency_from_intended(slot.intended, answered));
                    // what a closed loop reports: from when the call got through
                    per_call.push(answered - start);
                }
                Next::Wait(t) => now = t,
                Next::Done => break,
            }
        }
        assert_eq!(open_loop.len(), 300);
        let slow = |v: &[Duration]| v.iter().filter(|l| **l >= ms(100)).count();
        assert_eq!(slow(&per_call), 0, "per call, the stall is invisible");
        // the 100 requests due during the stall waited up to a whole second
        assert!(slow(&open_loop) >= 90, "{}", slow(&open_loop));
        assert_eq!(open_loop.iter().max(), Some(&ms(1001)));
    }

    #[test]
    fn lengths_and_bad_rates() {
        let s = Schedule::new(vec![seg(2, f64::NAN), seg(1, -5.0), seg(1, 1.0)], 0);
        assert_eq!(s.len(), Duration::from_secs(4));
        assert_eq!(s.segment_start(2), Duration::from_secs(3));
        assert_eq!(s.frames_per_request(), 1);
        assert_eq!(all_intended(s), [(Duration::from_secs(3), 2)]);
        assert!(Schedule::new(vec![], 1).is_empty());
    }
}
