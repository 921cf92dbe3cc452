//! File and directory names. A file's name is its identity for exactly-once: every file
//! of one flush, in every dataset and date directory, is named after the flushed Kafka
//! range `{topic}+{partition}+{first:020}+{last:020}.parquet`, so rewriting a range
//! replaces files instead of adding new ones, and recovery can read back from storage
//! alone which ranges were written. `+` cannot occur in a Kafka topic name
//! (`[a-zA-Z0-9._-]`), so names split unambiguously.
//!
//! Temporary files are `.tmp-{final name}-{16 hex}`: the leading dot and the suffix keep
//! them out of every `*.parquet` glob, and the embedded final name tells recovery which
//! topic-partition left them behind.

use chrono::NaiveDate;

use crate::schema::Dataset;

const SUFFIX: &str = ".parquet";
const TEMP_PREFIX: &str = ".tmp-";

/// A topic-partition offset range as named by a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeName {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

/// What a directory entry is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedName {
    /// A complete, visible file.
    Final(RangeName),
    /// A temporary file of an interrupted write.
    Temp(RangeName),
}

/// The final file name of a flushed range.
pub fn file_name(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{topic}+{partition}+{first:020}+{last:020}{SUFFIX}")
}

/// A temporary name for writing `final_name` in the same directory.
pub fn temp_name(final_name: &str, nonce: u64) -> String {
    format!("{TEMP_PREFIX}{final_name}-{nonce:016x}")
}

/// The directory of a dataset's files for one UTC date, relative to the data root.
pub fn date_dir(dataset: Dataset, date: NaiveDate) -> String {
    format!("{}/date={}", dataset.name(), date.format("%Y-%m-%d"))
}

/// Parses a final or temporary file name written by this crate; `None` for anything else.
pub fn parse(name: &str) -> Option<ParsedName> {
    if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
        let (final_name, nonce) = rest.rsplit_once('-')?;
        if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return parse_final(final_name).map(ParsedName::Temp);
    }
    parse_final(name).map(ParsedName::Final)
}

fn parse_final(name: &str) -> Option<RangeName> {
    let stem = name.strip_suffix(SUFFIX)?;
    let mut parts = stem.rsplitn(4, '+');
    let last = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    if topic.is_empty() || first > last {
        return None;
    }
    Some(RangeName {
        topic: topic.to_string(),
        partition,
        first,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(topic: &str, partition: i32, first: i64, last: i64) -> RangeName {
        RangeName {
            topic: topic.into(),
            partition,
            first,
            last,
        }
    }

    #[test]
    fn names_round_trip() {
        let name = file_name("feeder.checked", 3, 100, 19_999);
        assert_eq!(
            name,
            "feeder.checked+3+00000000000000000100+00000000000000019999.parquet"
        );
        assert_eq!(
            parse(&name),
            Some(ParsedName::Final(range("feeder.checked", 3, 100, 19_999)))
        );
        let tmp = temp_name(&name, 0xabc);
        assert!(tmp.starts_with(".tmp-") && !tmp.ends_with(".parquet"));
        assert_eq!(
            parse(&tmp),
            Some(ParsedName::Temp(range("feeder.checked", 3, 100, 19_999)))
        );
        // topic names may contain '-', '_' and '.'
        let odd = file_name("a-b_c.d-", 0, 0, 0);
        assert_eq!(
            parse(&odd),
            Some(ParsedName::Final(range("a-b_c.d-", 0, 0, 0)))
        );
        assert_eq!(
            parse(&temp_name(&odd, 1)),
            Some(ParsedName::Temp(range("a-b_c.d-", 0, 0, 0)))
        );
    }

    #[test]
    fn foreign_names_are_ignored() {
        for name in [
            "part-0001.parquet",
            "t+1+2.parquet",
            "+1+2+3.parquet",
            "t+x+1+2.parquet",
            "t+1+5+2.parquet",
            "t+1+1+2.parquet.bak",
            ".tmp-t+1+1+2.parquet",
            ".tmp-t+1+1+2.parquet-zz",
            "_SUCCESS",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }

    #[test]
    fn date_dirs_are_hive_style() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 9).unwrap();
        assert_eq!(date_dir(Dataset::Readings, d), "readings/date=2024-03-09");
        let d = NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
        assert_eq!(
            date_dir(Dataset::Quarantine, d),
            "quarantine/date=0000-01-01"
        );
    }
}
