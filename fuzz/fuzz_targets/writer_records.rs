//! Fuzz target: arbitrary bytes as one record of the checked, quarantine or anomalies
//! topic (the first byte picks the topic), through the writer's conversion to dataset
//! rows. Must never fail or panic (a bad record becomes a quarantine row), and the rows'
//! Arrow memory stays within a fixed multiple of the record.

#![no_main]

use feeder_writer::{SourceRecord, TopicKind, records_to_batches};
use libfuzzer_sys::fuzz_target;

/// Arrow bytes allowed per record byte, plus a constant for empty builders.
const MULTIPLE: usize = 1024;
const CONSTANT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let kind = match pick % 3 {
        0 => TopicKind::Checked,
        1 => TopicKind::Quarantine,
        _ => TopicKind::Anomalies,
    };
    let rec = SourceRecord {
        offset: 0,
        timestamp_ms: Some(0),
        payload: Some(bytes.to_vec()),
    };
    let out = records_to_batches(kind, &[rec]).expect("conversion never fails");
    let memory: usize = out
        .batches
        .iter()
        .map(|b| b.batch.get_array_memory_size())
        .sum();
    assert!(memory <= MULTIPLE * bytes.len() + CONSTANT, "{memory} from {}", bytes.len());
});
