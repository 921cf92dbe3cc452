//! The fleet aggregator's progress record (`<prefix>.cohort-progress`, key `progress`):
//! the newest judged window, the next offset of anomalies partition 0 (where findings
//! go) and the fleet's recent reporting shares. Text, versioned by its prefix; a reader
//! of every released version.

/// What the aggregator's progress record holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    pub(crate) judged_up_to: i64,
    pub(crate) anomalies_next: i64,
    /// The fleet's recent reporting shares, oldest first (`fleet_silence` history).
    pub(crate) shares: Vec<f64>,
}

impl Progress {
    /// `feeder-cohorts/2 judged=W anomalies=N shares=S1,S2,...` (f64 `Display` is the
    /// shortest text that parses back to the same value).
    pub(crate) fn encode(&self) -> String {
        let shares: Vec<String> = self.shares.iter().map(f64::to_string).collect();
        format!(
            "feeder-cohorts/2 judged={} anomalies={} shares={}",
            self.judged_up_to,
            self.anomalies_next,
            shares.join(",")
        )
    }

    /// Reads version 2, and version 1 (written before `fleet_silence`: no shares, so
    /// the rule starts cold after the upgrade).
    pub(crate) fn decode(s: &str) -> Option<Self> {
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
        assert_eq!(Progress::decode(""), None);
        for bad in [
            "feeder-cohorts/3 judged=1 anomalies=2 shares=",
            "feeder-cohorts/1 judged=x anomalies=2",
            "feeder-cohorts/2 judged=1 anomalies=2",
            "feeder-cohorts/2 judged=1 anomalies=2 shares=0.5,x",
            "feeder-cohorts/2 judged=1 anomalies=2 shares=0.5 more",
        ] {
            assert_eq!(Progress::decode(bad), None, "{bad}");
        }
    }

    /// Golden text of the format written today (version 2): a change of the text must
    /// bump the version and keep reading this one (issue 16 item 3).
    #[test]
    fn the_version_2_text_is_unchanged() {
        let p = Progress {
            judged_up_to: 493_251,
            anomalies_next: 17,
            shares: vec![0.95, 0.4, 1.0 / 3.0, 0.0, 1.0],
        };
        let golden =
            "feeder-cohorts/2 judged=493251 anomalies=17 shares=0.95,0.4,0.3333333333333333,0,1";
        assert_eq!(p.encode(), golden);
        assert_eq!(Progress::decode(golden), Some(p));
    }

    #[test]
    fn a_version_1_record_still_reads() {
        // what the aggregator wrote before fleet_silence: no shares (cold start)
        assert_eq!(
            Progress::decode("feeder-cohorts/1 judged=493251 anomalies=17"),
            Some(Progress {
                judged_up_to: 493_251,
                anomalies_next: 17,
                shares: Vec::new(),
            })
        );
    }
}
