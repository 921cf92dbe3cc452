//! The fleet aggregator's progress record (`<prefix>.cohort-progress`, key `progress`):
//! the newest judged window, the next offset of anomalies partition 0 (where findings
//! go) and the fleet's recent reporting shares. Written as a `CohortProgress`
//! (`proto/feeder/pipeline/v1/cohorts.proto`); the text versions written before it
//! (`feeder-cohorts/1`, `feeder-cohorts/2`) are still read: the topic is compacted, so
//! the last record of an older version is what an upgraded aggregator finds.

use feeder_proto::pipeline::CohortProgress;
use prost::Message as _;

/// The prefix of the text versions (never the first bytes of a `CohortProgress`: `f` is
/// not a valid protobuf key for it).
const TEXT_PREFIX: &[u8] = b"feeder-cohorts/";

/// What the aggregator's progress record holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    pub(crate) judged_up_to: i64,
    pub(crate) anomalies_next: i64,
    /// The fleet's recent reporting shares, oldest first (`fleet_silence` history).
    pub(crate) shares: Vec<f64>,
}

impl Progress {
    /// The record's bytes: a `CohortProgress`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        CohortProgress {
            judged_up_to: self.judged_up_to,
            anomalies_next: self.anomalies_next,
            shares: self.shares.clone(),
        }
        .encode_to_vec()
    }

    /// Reads a `CohortProgress`, or a text version; `None`: not a progress record (an
    /// empty value included).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(TEXT_PREFIX) {
            return Self::decode_text(std::str::from_utf8(bytes).ok()?);
        }
        if bytes.is_empty() {
            return None;
        }
        let p = CohortProgress::decode(bytes).ok()?;
        Some(Self {
            judged_up_to: p.judged_up_to,
            anomalies_next: p.anomalies_next,
            shares: p.shares,
        })
    }

    /// Text version 2, `feeder-cohorts/2 judged=W anomalies=N shares=S1,S2,...` (f64
    /// `Display`: the shortest text that parses back to the same value), and version 1
    /// (written before `fleet_silence`: no shares, so the rule starts cold after the
    /// upgrade).
    fn decode_text(s: &str) -> Option<Self> {
        let (rest, v2) = match s.strip_prefix("feeder-cohorts/2 ") {
            Some(rest) => (rest, true),
            None => (s.strip_prefix("feeder-cohorts/1 ")?, false),
        };
        let mut it = rest.split(' ');
        let judged_up_to = it.next()?.strip_prefix("judged=")?.parse().ok()?;
        let anomalies_next = it.next()?.strip_prefix("anomalies=")?.parse().ok()?;
        let shares = if v2 {
            let list = it.next()?.strip_prefix("shares=")?;
            if list.is_empty() {
                Vec::new()
            } else {
                list.split(',')
                    .map(|x| x.parse().ok())
                    .collect::<Option<Vec<f64>>>()?
            }
        } else {
            Vec::new()
        };
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            judged_up_to,
            anomalies_next,
            shares,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_rejects_foreign_metadata() {
        let p = Progress {
            judged_up_to: 493_251,
            anomalies_next: 17,
            shares: vec![0.95, 0.4, 1.0 / 3.0, 0.0, 1.0],
        };
        assert_eq!(Progress::decode(&p.encode()), Some(p.clone()));
        let first = Progress {
            judged_up_to: i64::MIN,
            anomalies_next: 0,
            shares: Vec::new(),
        };
        assert_eq!(Progress::decode(&first.encode()), Some(first));
        assert_eq!(Progress::decode(b""), None);
        for bad in [
            "feeder-cohorts/3 judged=1 anomalies=2 shares=",
            "feeder-cohorts/1 judged=x anomalies=2",
            "feeder-cohorts/2 judged=1 anomalies=2",
            "feeder-cohorts/2 judged=1 anomalies=2 shares=0.5,x",
            "feeder-cohorts/2 judged=1 anomalies=2 shares=0.5 more",
        ] {
            assert_eq!(Progress::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    /// Golden bytes of the format written today (`CohortProgress`): a change must come
    /// with a new format and a reader of this one (issue 16 item 3).
    #[test]
    fn the_record_keeps_its_bytes() {
        let p = Progress {
            judged_up_to: 493_251,
            anomalies_next: 17,
            shares: vec![0.5, 1.0],
        };
        let hex: String = p.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_PROGRESS);
        assert_eq!(Progress::decode(&p.encode()), Some(p));
    }

    const GOLDEN_PROGRESS: &str = "08c38d1e10111a10000000000000e03f000000000000f03f";

    /// What the aggregator wrote before `CohortProgress` (text version 2, pinned while it
    /// was the current format) still reads.
    #[test]
    fn a_version_2_text_record_still_reads() {
        let golden =
            "feeder-cohorts/2 judged=493251 anomalies=17 shares=0.95,0.4,0.3333333333333333,0,1";
        assert_eq!(
            Progress::decode(golden.as_bytes()),
            Some(Progress {
                judged_up_to: 493_251,
                anomalies_next: 17,
                shares: vec![0.95, 0.4, 1.0 / 3.0, 0.0, 1.0],
            })
        );
    }

    #[test]
    fn a_version_1_record_still_reads() {
        // what the aggregator wrote before fleet_silence: no shares (cold start)
        assert_eq!(
            Progress::decode(b"feeder-cohorts/1 judged=493251 anomalies=17"),
            Some(Progress {
                judged_up_to: 493_251,
                anomalies_next: 17,
                shares: Vec::new(),
            })
        );
    }
}
