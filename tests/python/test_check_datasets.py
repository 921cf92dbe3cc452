"""Self-tests of check_datasets.py on small synthetic datasets.

Why: the checker is the judge of the writer's output in the end-to-end tests, so it
must itself be shown to pass good data and to catch each kind of bad data (duplicate
rows, a missing provenance row, a frame that should be absent, wrong column types,
half-written files). The synthetic files are built here with pyarrow from the column
tables of shared/datasets.md, written out independently of the checker's own schema
table, so a mistake there is not mirrored here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import check_datasets  # noqa: E402

TS = pa.timestamp("ms", tz="UTC")
FLAGS = pa.list_(pa.string())

# Column tables of shared/datasets.md.
READINGS = pa.schema([
    ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("interval_s", pa.uint32()),
    ("obis", pa.string()), ("value", pa.float64()), ("value_raw", pa.int64()), ("scaler", pa.int32()),
    ("unit", pa.string()), ("status", pa.uint32()), ("flags", FLAGS), ("received_at", TS),
])
TELEMATICS = pa.schema([
    ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("lat", pa.float64()),
    ("lon", pa.float64()), ("speed_m_s", pa.float64()), ("heading_deg", pa.float64()),
    ("odometer_m", pa.uint64()), ("ignition", pa.bool_()), ("battery_v", pa.float64()),
    ("flags", FLAGS), ("received_at", TS),
])
EVENTS = pa.schema([
    ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("kind", pa.string()),
    ("detail", pa.string()), ("received_at", TS),
])
QUARANTINE = pa.schema([
    ("received_at", TS), ("device_id", pa.string()), ("seq", pa.uint64()), ("reason", pa.string()),
    ("detail", pa.string()), ("raw", pa.binary()),
])
FRAMES = pa.schema([
    ("device_id", pa.string()), ("seq", pa.uint64()), ("key_id", pa.string()), ("received_at", TS),
    ("edge_id", pa.string()), ("payload", pa.binary()), ("signature", pa.binary()),
])

DAY = "2024-05-01"
T0 = int(datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
METER = "mtr-000001"
VEHICLE = "veh-000042"


def reading(seq: int, obis: str, raw: int, scaler: int, unit: str, ts: int = T0, value=None) -> dict:
    return {
        "device_id": METER, "seq": seq, "ts": ts, "interval_s": 0, "obis": obis,
        "value": raw * 10.0**scaler if value is None else value, "value_raw": raw, "scaler": scaler,
        "unit": unit, "status": 0, "flags": [], "received_at": ts + 50,
    }


def frame_readings(seq: int) -> list[dict]:
    ts = T0 + seq * 900_000
    return [
        reading(seq, "1-0:1.8.0", 5_000_000 + seq, 0, "Wh", ts),
        reading(seq, "1-0:1.7.0", 1520, 0, "W", ts),
        reading(seq, "1-0:32.7.0", 2301, -1, "V", ts),
        reading(seq, "1-0:14.7.0", 5000, -2, "Hz", ts),
    ]


def frame_row(device: str, seq: int) -> dict:
    return {"device_id": device, "seq": seq, "key_id": "k1", "received_at": T0 + seq,
            "edge_id": "edge-1", "payload": b"\x08\x01", "signature": b"\x00" * 64}


def write(root: Path, dataset: str, rows: list[dict], schema: pa.Schema,
          name: str = "part-00000.parquet", day: str = DAY) -> Path:
    path = root / dataset / f"date={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two acked meter frames (seq 1, 2; 4 readings each, one event on seq 2) and a
    quarantined seq 3. No telematics/ or anomalies/ directory at all."""
    r = tmp_path / "data"
    write(r, "readings", frame_readings(1), READINGS, "part-00000.parquet")
    write(r, "readings", frame_readings(2), READINGS, "part-00001.parquet")
    write(r, "events", [{"device_id": METER, "seq": 2, "ts": T0 + 1_800_000, "kind": "cover_opened",
                         "detail": "", "received_at": T0 + 1_800_050}], EVENTS)
    write(r, "frames", [frame_row(METER, 1), frame_row(METER, 2)], FRAMES)
    write(r, "quarantine", [{"received_at": T0, "device_id": METER, "seq": 3, "reason": "bad_signature",
                             "detail": "signature does not verify", "raw": b"\x0a\x01"}], QUARANTINE)
    return r


def expect(tmp_path: Path, acked=None, absent=None, quarantined=None) -> Path:
    exp = {
        "acked": acked if acked is not None else [
            {"device_id": METER, "seq": 1, "readings": 4, "samples": 0, "events": 0},
            {"device_id": METER, "seq": 2, "readings": 4, "samples": 0, "events": 1},
        ],
        "absent": absent if absent is not None else [{"device_id": METER, "seq": 3}],
        "quarantined": quarantined if quarantined is not None else [
            {"device_id": METER, "seq": 3, "reason": "bad_signature"}
        ],
    }
    path = tmp_path / "expect.json"
    path.write_text(json.dumps(exp))
    return path


def run(capsys, *argv: str) -> tuple[int, dict]:
    rc = check_datasets.main([str(a) for a in argv])
    out = capsys.readouterr().out
    return rc, json.loads(out.strip().splitlines()[-1])


def failures_matching(report: dict, text: str) -> list[str]:
    return [f for f in report["failures"] if text in f]


# --------------------------------------------------------------------------- passing


def test_good_data_passes(root, tmp_path, capsys):
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rep["failures"] == [] and rep["ok"] is True and rc == 0
    assert (rep["readings"], rep["telematics"], rep["events"], rep["frames"], rep["quarantine"]) == (8, 0, 1, 2, 1)
    assert rep["engines"]["duckdb"] == rep["engines"]["pyarrow"]


def test_telematics_and_samples(root, tmp_path, capsys):
    samples = [
        {"device_id": VEHICLE, "seq": 1, "ts": T0 + i * 1000, "lat": 52.52, "lon": 13.405,
         "speed_m_s": 13.9, "heading_deg": 90.0, "odometer_m": 120_000 + i, "ignition": True,
         "battery_v": 12.6, "flags": [], "received_at": T0 + 5000}
        for i in range(3)
    ]
    write(root, "telematics", samples, TELEMATICS)
    write(root, "frames", [frame_row(VEHICLE, 1)], FRAMES, "part-00001.parquet")
    acked = [
        {"device_id": METER, "seq": 1, "readings": 4},
        {"device_id": METER, "seq": 2, "readings": 4, "events": 1},
        {"device_id": VEHICLE, "seq": 1, "readings": 0, "samples": 3},
    ]
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path, acked=acked))
    assert rep["failures"] == [] and rc == 0
    assert rep["telematics"] == 3 and rep["frames"] == 3

    # The same data with a wrong sample count fails.
    acked[2]["samples"] = 2
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path, acked=acked))
    assert rc == 1
    assert failures_matching(rep, "[both] telematics: acked frame ('veh-000042', 1) has 3 rows, expected 2")


def test_empty_root_is_empty_not_an_error(tmp_path, capsys):
    r = tmp_path / "data"
    r.mkdir()
    (r / "readings").mkdir()  # an empty dataset directory is also just empty
    rc, rep = run(capsys, "--data", r, "--expect", expect(tmp_path, acked=[], absent=[], quarantined=[]))
    assert rep["failures"] == [] and rc == 0
    assert all(rep[d] == 0 for d in check_datasets.DATASETS)


def test_summary_only(root, capsys):
    rc, rep = run(capsys, "--data", root, "--summary-only")
    assert rc == 0 and rep["ok"] is True
    assert (rep["readings"], rep["events"], rep["frames"], rep["quarantine"], rep["telematics"]) == (8, 1, 2, 1, 0)


def test_without_expectations_runs_invariant_checks(root, capsys):
    rc, rep = run(capsys, "--data", root)
    assert rep["failures"] == [] and rc == 0
    write(root, "readings", frame_readings(1)[:1], READINGS, "part-00002.parquet")
    rc, rep = run(capsys, "--data", root)
    assert rc == 1 and failures_matching(rep, "exactly-once violated")


# --------------------------------------------------------------------------- failing


def test_duplicate_reading_row(root, tmp_path, capsys):
    # The writer stored one reading of seq 2 twice (e.g. replayed after a crash).
    write(root, "readings", frame_readings(2)[:1], READINGS, "part-00002.parquet")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1 and rep["ok"] is False
    dup = failures_matching(rep, "exactly-once violated")
    assert len(dup) == 1 and dup[0].startswith("[both] readings: 1 (device_id, seq, ts_ms, obis) keys")
    assert "('mtr-000001', 2, " in dup[0] and "'1-0:1.8.0', 2)" in dup[0]
    assert failures_matching(rep, "[both] readings: acked frame ('mtr-000001', 2) has 5 rows, expected 4")
    assert failures_matching(rep, "[both] readings: 9 rows in total, expected 8")


def test_missing_frames_row(root, tmp_path, capsys):
    write(root, "frames", [frame_row(METER, 1)], FRAMES)  # overwrite: seq 2's provenance lost
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert rep["failures"] == ["[both] frames: acked frame ('mtr-000001', 2) has 0 rows, expected 1"]


def test_two_frames_rows_for_one_frame(root, tmp_path, capsys):
    write(root, "frames", [frame_row(METER, 2)], FRAMES, "part-00001.parquet")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert rep["failures"] == ["[both] frames: acked frame ('mtr-000001', 2) has 2 rows, expected 1"]


def test_absent_frame_present(root, tmp_path, capsys):
    # The test believes seq 2 was rejected, but its rows are there.
    acked = [{"device_id": METER, "seq": 1, "readings": 4}]
    absent = [{"device_id": METER, "seq": 2}, {"device_id": METER, "seq": 3}]
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path, acked=acked, absent=absent))
    assert rc == 1
    for name, n in (("readings", 4), ("events", 1), ("frames", 1)):
        assert failures_matching(rep, f"[both] {name}: frame ('mtr-000001', 2) must be absent but has {n} rows")
    assert failures_matching(rep, "[both] readings: 8 rows in total, expected 4")


def test_quarantine_reason_mismatch(root, tmp_path, capsys):
    q = [{"device_id": METER, "seq": 3, "reason": "too_old"}, {"device_id": METER, "seq": 9, "reason": "x"}]
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path, quarantined=q))
    assert rc == 1
    assert rep["failures"] == [
        "[both] quarantine: no row for ('mtr-000001', 3) with reason 'too_old' (rows for it have reasons ['bad_signature'])",
        "[both] quarantine: no row for ('mtr-000001', 9) with reason 'x' (no quarantine row for it at all)",
    ]


def test_wrong_column_types(root, tmp_path, capsys):
    bad = READINGS.set(READINGS.get_field_index("seq"), pa.field("seq", pa.int64()))
    bad = bad.set(bad.get_field_index("ts"), pa.field("ts", pa.timestamp("ms")))  # no time zone
    bad = bad.set(bad.get_field_index("flags"), pa.field("flags", pa.string()))
    rows = frame_readings(1)
    for r in rows:
        r["flags"] = ""
    write(root, "readings", rows, bad, "part-00000.parquet")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    f = rep["failures"]
    # pyarrow checks every file's own schema; DuckDB reports its unified view.
    assert failures_matching(rep, "[pyarrow] readings/date=2024-05-01/part-00000.parquet: column seq is int64, want uint64")
    assert failures_matching(rep, "[pyarrow] readings/date=2024-05-01/part-00000.parquet: column ts is timestamp[ms], want timestamp(ms, UTC)")
    assert failures_matching(rep, "column flags is string, want list<string>")
    assert any(x.startswith("[duckdb]") for x in f), f


def test_timestamp_unit_must_be_ms(root, tmp_path, capsys):
    bad = READINGS.set(READINGS.get_field_index("ts"), pa.field("ts", pa.timestamp("us", tz="UTC")))
    rows = frame_readings(1)
    for r in rows:
        r["ts"] = r["ts"] * 1000
    write(root, "readings", rows, bad, "part-00000.parquet")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert failures_matching(rep, "column ts is timestamp[us, tz=UTC], want timestamp(ms, UTC)")


def test_half_written_file_visible(root, tmp_path, capsys):
    write(root, "readings", frame_readings(3), READINGS, ".tmp-part-00009.parquet")
    (root / "readings" / f"date={DAY}" / ".tmp-part-00010").write_bytes(b"PAR1")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert failures_matching(rep, "[tree] half-written file visible to the 'readings/**/*.parquet' glob: "
                                  f"date={DAY}/.tmp-part-00009.parquet")
    # DuckDB's glob reads the hidden file, pyarrow skips it: the readers now disagree.
    assert failures_matching(rep, "[duckdb vs pyarrow] readings: duckdb counts 12 rows, pyarrow counts 8")
    assert failures_matching(rep, "[duckdb] readings: 12 rows in total, expected 8")
    # A temp file that the glob does not match is only a warning.
    assert any(".tmp-part-00010" in w for w in rep["warnings"])


def test_partition_date_must_be_utc_date_of_ts(root, tmp_path, capsys):
    rows = frame_readings(1)
    rows[0]["ts"] = T0 + 13 * 3_600_000  # 2024-05-02T01:00Z, filed under date=2024-05-01
    write(root, "readings", rows, READINGS, "part-00000.parquet")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert rep["failures"] == [
        "[duckdb] rows whose date= partition is not the UTC date of ts (device_id, seq, ts, date): "
        "('mtr-000001', 1, '2024-05-02 01:00:00+00', '2024-05-01')"
    ]


def test_bad_layout(root, tmp_path, capsys):
    write(root, "readings", frame_readings(3), READINGS, "stray.parquet", day="2024-05-01/extra")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert failures_matching(rep, "[tree] readings/date=2024-05-01/extra/stray.parquet is not laid out as")


def test_value_must_match_raw_and_scaler(root, tmp_path, capsys):
    rows = frame_readings(1)
    rows[2]["value"] = 2301.0  # forgot the scaler of -1
    write(root, "readings", rows, READINGS, "part-00000.parquet")
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert rep["failures"] == [
        "[duckdb] readings whose value != value_raw * 10^scaler (device_id, seq, obis, value, value_raw, scaler): "
        "('mtr-000001', 1, '1-0:32.7.0', 2301.0, 2301, -1)"
    ]


def test_missing_root(tmp_path, capsys):
    rc, rep = run(capsys, "--data", tmp_path / "nope", "--expect", expect(tmp_path, [], [], []))
    assert rc == 1 and failures_matching(rep, "does not exist")


@pytest.mark.parametrize("content, message", [
    ("not json", "cannot read expectation file"),
    (json.dumps({"acked": [{"device_id": METER, "seq": 1}]}), "readings must be an integer"),
    (json.dumps({"acked": [{"device_id": METER, "seq": 1, "readings": 4}],
                 "absent": [{"device_id": METER, "seq": 1}]}), "both acked and absent"),
    (json.dumps({"ackd": []}), "unknown keys"),
])
def test_bad_expectation_file(root, tmp_path, capsys, content, message):
    path = tmp_path / "expect.json"
    path.write_text(content)
    rc, rep = run(capsys, "--data", root, "--expect", path)
    assert rc == 1 and rep["ok"] is False and message in rep["failures"][0]


def test_command_line(root, tmp_path):
    """The script as the end-to-end tests run it: JSON on stdout, exit code 0/1."""
    script = HERE / "check_datasets.py"
    good = subprocess.run([sys.executable, script, "--data", root, "--expect", expect(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True

    write(root, "frames", [frame_row(METER, 1)], FRAMES)
    bad = subprocess.run([sys.executable, script, "--data", root, "--expect", expect(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False
    assert "FAIL [both] frames: acked frame ('mtr-000001', 2) has 0 rows, expected 1" in bad.stderr


def test_unit_and_event_kind_names(root, tmp_path, capsys):
    rows = frame_readings(1)
    rows[0]["unit"] = "kWh"  # not a contract unit name
    rows[1]["unit"] = None  # UNIT_UNSPECIFIED: allowed
    write(root, "readings", rows, READINGS, "part-00000.parquet")
    write(root, "events", [{"device_id": METER, "seq": 2, "ts": T0 + 1_800_000, "kind": "COVER_OPENED",
                            "detail": "", "received_at": T0 + 1_800_050}], EVENTS)
    rc, rep = run(capsys, "--data", root, "--expect", expect(tmp_path))
    assert rc == 1
    assert len(rep["failures"]) == 2, rep["failures"]
    assert failures_matching(rep, "[duckdb] readings with a unit outside") and "('kWh', 1)" in rep["failures"][0]
    assert failures_matching(rep, "[duckdb] events whose kind is not a lower-case EventKind name (kind, rows): ('COVER_OPENED', 1)")
