//! The `flags` list of each row, bounded whatever the record says.
//!
//! A `CheckedFrame` carries frame flags (meant for every row) and per-row flags by index.
//! Copied naively, `f` frame flags on `r` rows are `f × r` list entries from `f + r`
//! input items: a record of a few MiB could expand to billions of entries and take the
//! writer down, on every restart (a crash loop on that partition). So each row's list is
//! built under fixed bounds, stated here and in `docs/datasets.md`:
//!
//! - a flag is a rule name: one longer than [`MAX_FLAG_BYTES`] or empty is not kept;
//! - a flag appears at most once in a row's list (frame flags first, then the row's own,
//!   in record order);
//! - a row's list has at most [`MAX_FLAGS_PER_ROW`] entries;
//! - one record's rows together hold at most [`MAX_FLAG_ENTRIES_PER_RECORD`] kept flags,
//!   and at most [`FLAG_BYTES_PER_RECORD_BYTE`] bytes of them (name plus its 4-byte
//!   offset) per byte of the record, so a flush of small hostile records cannot multiply
//!   either (a real frame carries a 64-byte signature and its readings: a few flags a
//!   row never come near);
//! - a row that lost any flag to these bounds ends with the one flag
//!   [`FLAGS_TRUNCATED`] (within the per-row bound), so nothing is dropped silently;
//!   such rows are counted (`feeder_writer_flags_truncated_rows_total`).
//!
//! So one record's flag entries are at most `MAX_FLAG_ENTRIES_PER_RECORD + rows`, and
//! their bytes at most `FLAG_BYTES_PER_RECORD_BYTE × record + 19 × rows` (a marker and
//! its offset per row). The cost of building them is linear in the record:
//! frame flags are cleaned once per record, each row's own flags are read once, and
//! row indexes past the frame's rows are never looked at.

use std::collections::BTreeMap;

use feeder_proto::pipeline::RowFlags;

/// Most entries in one row's `flags` list, [`FLAGS_TRUNCATED`] included.
pub const MAX_FLAGS_PER_ROW: usize = 32;
/// Longest flag kept, in bytes (rule names are short snake_case words).
pub const MAX_FLAG_BYTES: usize = 64;
/// Most flags kept over all rows of one record ([`FLAGS_TRUNCATED`] markers not counted).
pub const MAX_FLAG_ENTRIES_PER_RECORD: usize = 65_536;
/// Bytes of kept flags (name + 4-byte offset) allowed per byte of the record.
pub const FLAG_BYTES_PER_RECORD_BYTE: usize = 16;
/// Arrow's offset per list entry, counted in the byte budget.
const ENTRY_OVERHEAD: usize = 4;
/// The last flag of a row whose list was cut by a bound above.
pub const FLAGS_TRUNCATED: &str = "flags_truncated";

fn acceptable(flag: &str) -> bool {
    !flag.is_empty() && flag.len() <= MAX_FLAG_BYTES
}

/// Builds the flag lists of one record's rows.
pub(crate) struct RecordFlags<'a> {
    /// The frame flags, cleaned: acceptable, distinct, at most `MAX_FLAGS_PER_ROW`.
    frame: Vec<&'a str>,
    /// True when cleaning the frame flags dropped one (so every flagged row is cut).
    frame_cut: bool,
    /// Kept flags still allowed for the rest of this record.
    budget: usize,
    /// Bytes of kept flags still allowed for the rest of this record.
    bytes_left: usize,
    /// Rows whose list ended in [`FLAGS_TRUNCATED`].
    pub truncated_rows: u64,
}

impl<'a> RecordFlags<'a> {
    /// `record_bytes`: the size of the record the flags come from.
    pub fn new(frame_flags: &'a [String], record_bytes: usize) -> Self {
        let mut frame = Vec::new();
        let mut frame_cut = false;
        for f in frame_flags {
            let f = f.as_str();
            if !acceptable(f) || frame.len() == MAX_FLAGS_PER_ROW {
                frame_cut = true;
            } else if !frame.contains(&f) {
                frame.push(f);
            }
        }
        Self {
            frame,
            frame_cut,
            budget: MAX_FLAG_ENTRIES_PER_RECORD,
            bytes_left: record_bytes.saturating_mul(FLAG_BYTES_PER_RECORD_BYTE),
            truncated_rows: 0,
        }
    }

    /// Fills `out` (cleared first) with the list of a row whose own flags are `own`.
    pub fn row(&mut self, own: &[&'a str], out: &mut Vec<&'a str>) {
        out.clear();
        let room = MAX_FLAGS_PER_ROW.min(self.budget);
        let mut cut = self.frame_cut;
        // frame flags are already clean and distinct
        for i in 0..self.frame.len() {
            if !self.keep(self.frame[i], room, out) {
                cut = true;
                break;
            }
        }
        if out.len() == self.frame.len() {
            for &f in own {
                if !acceptable(f) {
                    cut = true;
                } else if !out.contains(&f) && !self.keep(f, room, out) {
                    cut = true;
                    break;
                }
            }
        } else {
            cut |= !own.is_empty();
        }
        if cut {
            // the marker takes the last place when the row is full
            if out.len() == MAX_FLAGS_PER_ROW
                && let Some(f) = out.pop()
            {
                self.bytes_left += f.len() + ENTRY_OVERHEAD;
            }
            self.budget -= out.len();
            out.push(FLAGS_TRUNCATED);
            self.truncated_rows += 1;
        } else {
            self.budget -= out.len();
        }
    }

    /// Pushes `f` if the row has room and the record's bytes allow it.
    fn keep(&mut self, f: &'a str, room: usize, out: &mut Vec<&'a str>) -> bool {
        let cost = f.len() + ENTRY_OVERHEAD;
        if out.len() == room || cost > self.bytes_left {
            return false;
        }
        self.bytes_left -= cost;
        out.push(f);
        true
    }
}

/// Per-row flags by row index, for rows `0..rows` only; several entries for one index
/// are concatenated in order. Entries for indexes past the rows are ignored.
pub(crate) fn flags_by_index(rows: usize, entries: &[RowFlags]) -> BTreeMap<u32, Vec<&str>> {
    let mut map: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for r in entries.iter().filter(|r| (r.index as usize) < rows) {
        map.entry(r.index)
            .or_default()
            .extend(r.flags.iter().map(String::as_str));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ordinary_flags_pass_unchanged_and_repeats_collapse() {
        let frame = owned(&["clock_skew", "gap_before", "clock_skew"]);
        let mut rf = RecordFlags::new(&frame, 1 << 20);
        let mut out = Vec::new();
        rf.row(&["spike", "gap_before", "zero_run"], &mut out);
        assert_eq!(out, ["clock_skew", "gap_before", "spike", "zero_run"]);
        rf.row(&[], &mut out);
        assert_eq!(out, ["clock_skew", "gap_before"]);
        assert_eq!(rf.truncated_rows, 0);
        let none: [String; 0] = [];
        let mut rf = RecordFlags::new(&none, 1 << 20);
        rf.row(&[], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_row_holds_at_most_the_bound_ending_in_the_marker() {
        let many: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let mut rf = RecordFlags::new(&many, 1 << 20);
        let mut out = Vec::new();
        rf.row(&["spike"], &mut out);
        assert_eq!(out.len(), MAX_FLAGS_PER_ROW);
        assert_eq!(out[0], "f0");
        assert_eq!(out[MAX_FLAGS_PER_ROW - 2], "f30");
        assert_eq!(out.last(), Some(&FLAGS_TRUNCATED));
        // exactly the bound fits without the marker
        let exact: Vec<String> = (0..MAX_FLAGS_PER_ROW).map(|i| format!("f{i}")).collect();
        let mut rf = RecordFlags::new(&exact, 1 << 20);
        rf.row(&[], &mut out);
        assert_eq!(out.len(), MAX_FLAGS_PER_ROW);
        assert!(!out.contains(&FLAGS_TRUNCATED));
        rf.row(&["spike"], &mut out);
        assert_eq!(out.last(), Some(&FLAGS_TRUNCATED));
        assert_eq!(rf.truncated_rows, 1);
    }

    #[test]
    fn overlong_and_empty_flags_are_not_kept_but_marked() {
        let long = "x".repeat(MAX_FLAG_BYTES + 1);
        let longest = "y".repeat(MAX_FLAG_BYTES);
        let frame = vec![long, "spike".into()];
        let mut rf = RecordFlags::new(&frame, 1 << 20);
        let mut out = Vec::new();
        rf.row(&[], &mut out);
        assert_eq!(out, ["spike", FLAGS_TRUNCATED]);
        let none: [String; 0] = [];
        let mut rf = RecordFlags::new(&none, 1 << 20);
        rf.row(&["", "gap_before"], &mut out);
        assert_eq!(out, ["gap_before", FLAGS_TRUNCATED]);
        rf.row(&[&longest], &mut out);
        assert_eq!(out.len(), 1, "exactly the longest allowed is kept");
    }

    #[test]
    fn a_record_keeps_at_most_its_budget() {
        let frame: Vec<String> = (0..MAX_FLAGS_PER_ROW).map(|i| format!("f{i}")).collect();
        let mut rf = RecordFlags::new(&frame, 1 << 20);
        let mut out = Vec::new();
        let (mut kept, mut markers) = (0, 0);
        let rows = MAX_FLAG_ENTRIES_PER_RECORD / MAX_FLAGS_PER_ROW + 10;
        for _ in 0..rows {
            rf.row(&[], &mut out);
            markers += out.iter().filter(|f| **f == FLAGS_TRUNCATED).count();
            kept += out.iter().filter(|f| **f != FLAGS_TRUNCATED).count();
        }
        assert_eq!(kept, MAX_FLAG_ENTRIES_PER_RECORD);
        assert_eq!(markers, 10);
        assert_eq!(
            out,
            [FLAGS_TRUNCATED],
            "past the budget a row has the marker only"
        );
    }

    #[test]
    fn a_small_record_keeps_at_most_its_bytes_of_flags() {
        // 10 flags of 10 bytes: 14 bytes each with the offset; a 50-byte record allows 800
        let frame: Vec<String> = (0..10).map(|i| format!("flag_{i:05}")).collect();
        let mut rf = RecordFlags::new(&frame, 50);
        let mut out = Vec::new();
        let mut kept = 0;
        for _ in 0..100 {
            rf.row(&[], &mut out);
            kept += out.iter().filter(|f| **f != FLAGS_TRUNCATED).count();
        }
        assert_eq!(kept, 800 / 14);
        assert_eq!(out, [FLAGS_TRUNCATED]);
        assert_eq!(rf.truncated_rows, 95);
    }

    #[test]
    fn indexes_past_the_rows_are_ignored_and_repeated_ones_joined() {
        let e = |index, f: &[&str]| RowFlags {
            index,
            flags: owned(f),
        };
        let entries = [
            e(1, &["a"]),
            e(u32::MAX, &["b"]),
            e(1, &["c"]),
            e(3, &["d"]),
        ];
        let map = flags_by_index(3, &entries);
        assert_eq!(map.len(), 1);
        assert_eq!(map[&1], ["a", "c"]);
    }
}
