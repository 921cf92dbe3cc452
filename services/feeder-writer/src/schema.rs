//! The Arrow schemas of the datasets: the analysts' contract (`shared/datasets.md`).
//! Column names and types here are fixed within a dataset version; columns may be added,
//! never renamed or retyped.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// A dataset this writer produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dataset {
    Readings,
    Telematics,
    Events,
    Frames,
    Quarantine,
    /// Findings of the stream stage's rules (`anomalies` topic).
    Anomalies,
    /// VEE estimates and their supersessions (`CheckedFrame.estimates`).
    Estimates,
    /// Accepted changes of the device registry (the registry topic).
    RegistryChanges,
}

impl Dataset {
    pub const ALL: [Dataset; 8] = [
        Dataset::Readings,
        Dataset::Telematics,
        Dataset::Events,
        Dataset::Frames,
        Dataset::Quarantine,
        Dataset::Anomalies,
        Dataset::Estimates,
        Dataset::RegistryChanges,
    ];

    /// The directory name under the data root.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Readings => "readings",
            Dataset::Telematics => "telematics",
            Dataset::Events => "events",
            Dataset::Frames => "frames",
            Dataset::Quarantine => "quarantine",
            Dataset::Anomalies => "anomalies",
            Dataset::Estimates => "estimates",
            Dataset::RegistryChanges => "registry_changes",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Dataset::Readings => readings_schema(),
            Dataset::Telematics => telematics_schema(),
            Dataset::Events => events_schema(),
            Dataset::Frames => frames_schema(),
            Dataset::Quarantine => quarantine_schema(),
            Dataset::Anomalies => anomalies_schema(),
            Dataset::Estimates => estimates_schema(),
            Dataset::RegistryChanges => registry_changes_schema(),
        }
    }

    /// The column whose UTC date names the file's `date=` directory and that orders rows
    /// (after `device_id`) within a file.
    pub fn time_column(self) -> &'static str {
        match self {
            Dataset::Readings | Dataset::Telematics | Dataset::Events | Dataset::Estimates => "ts",
            Dataset::Frames | Dataset::Quarantine => "received_at",
            Dataset::Anomalies => "ts_from",
            Dataset::RegistryChanges => "changed_at",
        }
    }
}

/// `timestamp(ms, UTC)`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `list<string>`, the type of `flags`.
pub fn flags_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn ts(name: &str) -> Field {
    Field::new(name, timestamp_type(), false)
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

static READINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        ts("ts"),
        Field::new("interval_s", DataType::UInt32, false),
        Field::new("obis", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("value_raw", DataType::Int64, false),
        Field::new("scaler", DataType::Int32, false),
        // null when the meter sent an unspecified or unknown unit code
        Field::new("unit", DataType::Utf8, true),
        Field::new("status", DataType::UInt32, false),
        Field::new("flags", flags_type(), false),
        ts("received_at"),
    ])
});

static TELEMATICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        ts("ts"),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("speed_m_s", DataType::Float64, false),
        Field::new("heading_deg", DataType::Float64, false),
        Field::new("odometer_m", DataType::UInt64, false),
        Field::new("ignition", DataType::Boolean, false),
        Field::new("battery_v", DataType::Float64, false),
        Field::new("flags", flags_type(), false),
        ts("received_at"),
    ])
});

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        ts("ts"),
        Field::new("kind", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        ts("received_at"),
    ])
});

static FRAMES: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("key_id", DataType::Utf8, false),
        ts("received_at"),
        Field::new("edge_id", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
        Field::new("signature", DataType::Binary, false),
    ])
});

static QUARANTINE: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        ts("received_at"),
        Field::new("device_id", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("raw", DataType::Binary, false),
    ])
});

pub fn readings_schema() -> SchemaRef {
    READINGS.clone()
}

pub fn telematics_schema() -> SchemaRef {
    TELEMATICS.clone()
}

pub fn events_schema() -> SchemaRef {
    EVENTS.clone()
}

pub fn frames_schema() -> SchemaRef {
    FRAMES.clone()
}

pub fn quarantine_schema() -> SchemaRef {
    QUARANTINE.clone()
}

static ANOMALIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        ts("detected_at"),
        // null for a fleet-level finding
        Field::new("device_id", DataType::Utf8, true),
        // null for a device finding
        Field::new("cohort", DataType::Utf8, true),
        Field::new("rule", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        ts("ts_from"),
        ts("ts_to"),
        Field::new("detail", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, true),
    ])
});

pub fn anomalies_schema() -> SchemaRef {
    ANOMALIES.clone()
}

/// `estimates` (contract 1.1), plus `seq`: the frame whose checked record carried the
/// row (its arrival closed the gap, or brought the actual that superseded it).
static ESTIMATES: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("obis", DataType::Utf8, false),
        ts("ts"),
        Field::new("interval_s", DataType::UInt32, false),
        Field::new("value", DataType::Float64, false),
        Field::new("value_raw", DataType::Int64, false),
        Field::new("scaler", DataType::Int32, false),
        Field::new("unit", DataType::Utf8, true),
        Field::new("method", DataType::Utf8, false),
        Field::new("basis", DataType::Utf8, false),
        Field::new("rule_version", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        ts("created_at"),
        Field::new("seq", DataType::UInt64, false),
    ])
});

pub fn estimates_schema() -> SchemaRef {
    ESTIMATES.clone()
}

/// `registry_changes` (contract 1.1): one row per accepted change of the registry topic.
static REGISTRY_CHANGES: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        ts("changed_at"),
        Field::new("device_id", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("alg", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("previous_status", DataType::Utf8, true),
        Field::new("labels", DataType::Utf8, false),
        Field::new("signer", DataType::Utf8, true),
    ])
});

pub fn registry_changes_schema() -> SchemaRef {
    REGISTRY_CHANGES.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(d: Dataset) -> Vec<String> {
        d.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The contract's column lists, spelled out once more so a rename fails a test.
    #[test]
    fn column_names_match_the_contract() {
        assert_eq!(
            columns(Dataset::Readings),
            [
                "device_id",
                "seq",
                "ts",
                "interval_s",
                "obis",
                "value",
                "value_raw",
                "scaler",
                "unit",
                "status",
                "flags",
                "received_at"
            ]
        );
        assert_eq!(
            columns(Dataset::Telematics),
            [
                "device_id",
                "seq",
                "ts",
                "lat",
                "lon",
                "speed_m_s",
                "heading_deg",
                "odometer_m",
                "ignition",
                "battery_v",
                "flags",
                "received_at"
            ]
        );
        assert_eq!(
            columns(Dataset::Events),
            ["device_id", "seq", "ts", "kind", "detail", "received_at"]
        );
        assert_eq!(
            columns(Dataset::Frames),
            [
                "device_id",
                "seq",
                "key_id",
                "received_at",
                "edge_id",
                "payload",
                "signature"
            ]
        );
        assert_eq!(
            columns(Dataset::Quarantine),
            ["received_at", "device_id", "seq", "reason", "detail", "raw"]
        );
        assert_eq!(
            columns(Dataset::Anomalies),
            [
                "detected_at",
                "device_id",
                "cohort",
                "rule",
                "severity",
                "ts_from",
                "ts_to",
                "detail",
                "seq"
            ]
        );
        assert_eq!(
            columns(Dataset::Estimates),
            [
                "device_id",
                "obis",
                "ts",
                "interval_s",
                "value",
                "value_raw",
                "scaler",
                "unit",
                "method",
                "basis",
                "rule_version",
                "status",
                "created_at",
                "seq"
            ]
        );
        assert_eq!(
            columns(Dataset::RegistryChanges),
            [
                "changed_at",
                "device_id",
                "key_id",
                "alg",
                "status",
                "previous_status",
                "labels",
                "signer"
            ]
        );
    }

    #[test]
    fn types_match_the_contract() {
        for d in Dataset::ALL {
            let s = d.schema();
            if d != Dataset::RegistryChanges {
                assert_eq!(
                    s.field_with_name("seq").unwrap().data_type(),
                    &DataType::UInt64
                );
            }
            let provenance = match d {
                Dataset::Anomalies => "detected_at",
                Dataset::Estimates => "created_at",
                Dataset::RegistryChanges => "changed_at",
                _ => "received_at",
            };
            assert_eq!(
                s.field_with_name(provenance).unwrap().data_type(),
                &timestamp_type()
            );
            assert_eq!(
                s.field_with_name(d.time_column()).unwrap().data_type(),
                &timestamp_type()
            );
        }
        let r = readings_schema();
        assert!(r.field_with_name("unit").unwrap().is_nullable());
        assert_eq!(
            r.field_with_name("flags").unwrap().data_type(),
            &flags_type()
        );
        assert_eq!(
            r.field_with_name("scaler").unwrap().data_type(),
            &DataType::Int32
        );
        let t = telematics_schema();
        assert_eq!(
            t.field_with_name("odometer_m").unwrap().data_type(),
            &DataType::UInt64
        );
        assert_eq!(
            t.field_with_name("ignition").unwrap().data_type(),
            &DataType::Boolean
        );
    }
}
