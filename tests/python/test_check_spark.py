"""Self-test of check_spark.py: it must catch bad data, not only pass good data.

The end-to-end tests show Spark reading real datasets (tests/e2e_mock.rs,
tests/e2e_encrypted.rs). Here one small synthetic `readings` dataset, written with
pyarrow from the column table of shared/datasets.md, holds a row stored twice, a row in
the wrong date= directory and a frame with a reading missing; the checker must report
each. One Spark start (about 10 s), so one test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
TS = pa.timestamp("ms", tz="UTC")
READINGS = pa.schema([
    ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("interval_s", pa.uint32()),
    ("obis", pa.string()), ("value", pa.float64()), ("value_raw", pa.int64()),
    ("scaler", pa.int32()), ("unit", pa.string()), ("status", pa.uint32()),
    ("flags", pa.list_(pa.string())), ("received_at", TS),
])


def row(device: str, seq: int, ts: datetime) -> dict:
    return {"device_id": device, "seq": seq, "ts": ts, "interval_s": 900, "obis": "1.8.0",
            "value": 1.5, "value_raw": 15, "scaler": -1, "unit": "kWh", "status": 0,
            "flags": [], "received_at": ts}


def test_spark_checker_reports_duplicates_misplaced_and_missing_rows(tmp_path: Path):
    day = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    next_day = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    rows = [row("mtr-1", 1, day), row("mtr-1", 1, day),   # stored twice
            row("mtr-2", 7, next_day),                     # in the 2026-11-24 directory
            row("mtr-3", 1, day)]                          # 1 of the 2 readings sent
    d = tmp_path / "data" / "readings" / "date=2026-11-24"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=READINGS), d / "t+0+0+3.parquet")
    expect = {"acked": [
        {"device_id": "mtr-1", "seq": 1, "readings": 1},
        {"device_id": "mtr-2", "seq": 7, "readings": 1},
        {"device_id": "mtr-3", "seq": 1, "readings": 2},
    ]}
    (tmp_path / "expect.json").write_text(json.dumps(expect))
    done = subprocess.run(
        [sys.executable, str(HERE / "check_spark.py"), "--data", str(tmp_path / "data"),
         "--expect", str(tmp_path / "expect.json")],
        capture_output=True, text=True, timeout=300,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 1, out
    assert out["rows"]["readings"] == 4
    assert out["types"]["readings"]["seq"] == "decimal(20,0)"
    failures = "\n".join(out["failures"])
    assert "readings: 1 (device_id, seq, ts, obis) stored more than once" in failures
    assert "readings: 1 rows whose date= is not the UTC date of ts" in failures
    assert "readings: 2 acked frames without exactly their rows" in failures  # mtr-1, mtr-3
    assert "frames: 3 acked frames without exactly their rows" in failures  # no frames at all
