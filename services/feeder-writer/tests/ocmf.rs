//! OCMF frames become rows like any meter's (contract v1.1): the contract's vector 1
//! gives two `readings` rows of exact decimals in Wh with the time status, transaction
//! and status letters as flags (after the stream's own flags), and its `frames` row keeps
//! the OCMF string byte for byte with an empty signature.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use feeder_core::ocmf::vectors;
use feeder_proto::pipeline::{CheckedFrame, RowFlags};
use feeder_writer::convert::checked_to_batches;
use feeder_writer::schema::Dataset;

#[test]
fn vector_1_becomes_two_exact_readings_and_a_byte_exact_frame() {
    let cf = CheckedFrame {
        device_id: "evse-000001".into(),
        seq: 7,
        key_id: "k1".into(),
        payload: vectors::V1.as_bytes().to_vec().into(),
        signature: Default::default(),
        received_at_ms: 1_795_603_600_000,
        edge_id: "edge-a".into(),
        reading_flags: vec![RowFlags {
            index: 1,
            flags: vec!["register_decrease".into()],
        }],
        ..Default::default()
    };
    let out = checked_to_batches(&[cf]).unwrap();
    let batch = |d: Dataset| {
        let found: Vec<_> = out.batches.iter().filter(|b| b.dataset == d).collect();
        assert_eq!(found.len(), 1, "{d:?}");
        found[0].batch.clone()
    };
    let r = batch(Dataset::Readings);
    assert_eq!(r.num_rows(), 2);
    let col = |n: &str| r.column_by_name(n).unwrap().clone();
    let raw = col("value_raw");
    let raw = raw.as_primitive::<Int64Type>();
    let scaler = col("scaler");
    let scaler = scaler.as_primitive::<Int32Type>();
    let value = col("value");
    let value = value.as_primitive::<Float64Type>();
    assert_eq!((raw.value(0), scaler.value(0)), (12_345_670, -1));
    assert_eq!((raw.value(1), scaler.value(1)), (12_410_020, -1));
    assert!((value.value(0) - 1_234_567.0).abs() < 1e-6);
    let unit = col("unit");
    let obis = col("obis");
    for i in 0..2 {
        assert_eq!(unit.as_string::<i32>().value(i), "Wh");
        assert_eq!(obis.as_string::<i32>().value(i), "1-b:1.8.0");
    }
    let flags = col("flags");
    let flags = flags.as_list::<i32>();
    let row = |i: usize| -> Vec<String> {
        let v = flags.value(i);
        let s = v.as_string::<i32>();
        (0..s.len()).map(|j| s.value(j).to_string()).collect()
    };
    assert_eq!(row(0), ["ocmf_time_S", "ocmf_tx_B", "ocmf_st_G"]);
    assert_eq!(
        row(1),
        ["register_decrease", "ocmf_time_S", "ocmf_tx_E", "ocmf_st_G"]
    );

    let f = batch(Dataset::Frames);
    assert_eq!(f.num_rows(), 1);
    let payload = f.column_by_name("payload").unwrap();
    assert_eq!(payload.as_binary::<i32>().value(0), vectors::V1.as_bytes());
    let sig = f.column_by_name("signature").unwrap();
    assert!(sig.as_binary::<i32>().value(0).is_empty());
    assert_eq!(out.undecodable_payloads, 0);
}
