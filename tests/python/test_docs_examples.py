"""Runs every example of docs/datasets.md against a small dataset laid out like the writer's.

Why: the analysts' guide promises that its queries run; this test keeps that true when
the docs or the engines (pinned in requirements.txt) change. Each ```sql block runs in
DuckDB and each ```python block is executed, all from a directory whose `data/` is the
dataset root the examples name. The dataset is built here with pyarrow from the
contract's column tables (shared/datasets.md), in the writer's layout: Hive `date=`
directories of the row's UTC date, offset-range file names, rows sorted by device_id,
time, seq, zstd, sorting columns and `feeder.*` key-value metadata.

Not run here: the Iceberg snippet (fenced ```python iceberg), which needs a catalog and
tables; tests/python/check_iceberg.py reads Feeder's tables with pyiceberg the same way
in the iceberg_lifecycle test.
"""

from __future__ import annotations

import contextlib
import io
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"
TOPIC = "feeder.checked"

TS = pa.timestamp("ms", tz="UTC")
FLAGS = pa.list_(pa.string())
SCHEMAS = {
    "readings": pa.schema([
        ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("interval_s", pa.uint32()),
        ("obis", pa.string()), ("value", pa.float64()), ("value_raw", pa.int64()),
        ("scaler", pa.int32()), ("unit", pa.string()), ("status", pa.uint32()),
        ("flags", FLAGS), ("received_at", TS),
    ]),
    "telematics": pa.schema([
        ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("lat", pa.float64()),
        ("lon", pa.float64()), ("speed_m_s", pa.float64()), ("heading_deg", pa.float64()),
        ("odometer_m", pa.uint64()), ("ignition", pa.bool_()), ("battery_v", pa.float64()),
        ("flags", FLAGS), ("received_at", TS),
    ]),
    "events": pa.schema([
        ("device_id", pa.string()), ("seq", pa.uint64()), ("ts", TS), ("kind", pa.string()),
        ("detail", pa.string()), ("received_at", TS),
    ]),
    "frames": pa.schema([
        ("device_id", pa.string()), ("seq", pa.uint64()), ("key_id", pa.string()),
        ("received_at", TS), ("edge_id", pa.string()), ("payload", pa.binary()),
        ("signature", pa.binary()),
    ]),
    "quarantine": pa.schema([
        ("received_at", TS), ("device_id", pa.string()), ("seq", pa.uint64()),
        ("reason", pa.string()), ("detail", pa.string()), ("raw", pa.binary()),
    ]),
    "estimates": pa.schema([
        ("device_id", pa.string()), ("obis", pa.string()), ("ts", TS),
        ("interval_s", pa.uint32()), ("value", pa.float64()), ("value_raw", pa.int64()),
        ("scaler", pa.int32()), ("unit", pa.string()), ("method", pa.string()),
        ("basis", pa.string()), ("rule_version", pa.string()), ("status", pa.string()),
        ("created_at", TS), ("seq", pa.uint64()),
    ]),
}
SCHEMAS["registry_changes"] = pa.schema([
    ("changed_at", TS), ("device_id", pa.string()), ("key_id", pa.string()),
    ("alg", pa.string()), ("status", pa.string()), ("previous_status", pa.string()),
    ("labels", pa.string()), ("signer", pa.string()),
])
TIME_COLUMN = {"frames": "received_at", "quarantine": "received_at",
               "registry_changes": "changed_at"}

# 2024-03-10T22:00:00Z: frames every 30 minutes run past midnight into 2024-03-11.
START = datetime(2024, 3, 10, 22, 0, tzinfo=timezone.utc)


def build_rows() -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in SCHEMAS}
    for dev_no, device in enumerate(["mtr-000001", "mtr-000002"]):
        for seq in range(1, 9):
            ts = START + timedelta(minutes=30 * seq)
            received = ts + timedelta(seconds=2)
            rows["frames"].append(dict(
                device_id=device, seq=seq, key_id="k1", received_at=received, edge_id="edge-0",
                payload=bytes([seq]), signature=bytes(64),
            ))
            energy = 1000 * dev_no + 250 * seq
            rows["readings"].append(dict(
                device_id=device, seq=seq, ts=ts, interval_s=900, obis="1-0:1.8.0",
                value=float(energy), value_raw=energy, scaler=0, unit="Wh", status=0,
                flags=["gap_before"] if seq == 5 else [], received_at=received,
            ))
            # interval energy; mtr-000002's seqs 4 and 5 never arrived: estimated by
            # seq 6, and seq 5 arrived late (superseding its estimate)
            if not (dev_no == 1 and seq == 4):
                rows["readings"].append(dict(
                    device_id=device, seq=seq, ts=ts, interval_s=1800, obis="1-0:1.29.0",
                    value=250.0, value_raw=250, scaler=0, unit="Wh", status=0, flags=[],
                    received_at=received,
                ))
            if dev_no == 1 and seq in (4, 5):
                rows["estimates"].append(dict(
                    device_id=device, obis="1-0:1.29.0", ts=ts, interval_s=1800,
                    value=240.0 + seq, value_raw=240 + seq, scaler=0, unit="Wh",
                    method="register_proration", basis="1-0:1.8.0 1750 and 2500",
                    rule_version="feeder-vee/1", status="estimated",
                    created_at=START + timedelta(minutes=30 * 6, seconds=2), seq=6,
                ))
            if dev_no == 1 and seq == 5:
                rows["estimates"].append(dict(
                    device_id=device, obis="1-0:1.29.0", ts=ts, interval_s=1800,
                    value=250.0, value_raw=250, scaler=0, unit="Wh",
                    method="register_proration", basis="actual reading",
                    rule_version="feeder-vee/1", status="superseded",
                    created_at=START + timedelta(minutes=30 * 9), seq=5,
                ))
            rows["readings"].append(dict(
                device_id=device, seq=seq, ts=ts, interval_s=0, obis="1-0:32.7.0",
                value=230.0 + seq / 10, value_raw=2300 + seq, scaler=-1, unit="V", status=0,
                flags=[], received_at=received,
            ))
            if seq % 4 == 0:
                rows["events"].append(dict(
                    device_id=device, seq=seq, ts=ts, kind="cover_opened", detail="",
                    received_at=received,
                ))
    for seq in range(1, 5):
        ts = START + timedelta(minutes=45 * seq)
        rows["frames"].append(dict(
            device_id="veh-000001", seq=seq, key_id="k1", received_at=ts, edge_id="edge-0",
            payload=bytes([seq]), signature=bytes(32),
        ))
        rows["telematics"].append(dict(
            device_id="veh-000001", seq=seq, ts=ts, lat=52.5 + seq / 1000, lon=13.4,
            speed_m_s=10.0 * seq, heading_deg=90.0, odometer_m=1000 * seq, ignition=True,
            battery_v=12.6, flags=[], received_at=ts,
        ))
    for minutes, status, previous in ((0, "active", None), (240, "revoked", "active")):
        rows["registry_changes"].append(dict(
            changed_at=START + timedelta(minutes=minutes), device_id="mtr-000002", key_id="k1",
            alg="ed25519", status=status, previous_status=previous,
            labels='{"region":"north"}', signer="provisioning-1",
        ))
    rows["quarantine"].append(dict(
        received_at=START, device_id="mtr-000001", seq=3, reason="duplicate",
        detail="seq already accepted", raw=b"\x0a\x01x",
    ))
    return rows


def write_dataset(root: Path) -> None:
    for name, rows in build_rows().items():
        schema = SCHEMAS[name]
        time_col = TIME_COLUMN.get(name, "ts")
        rows.sort(key=lambda r: (r["device_id"], r[time_col], r.get("seq", 0)))
        by_date: dict[str, list[dict]] = {}
        for r in rows:
            by_date.setdefault(r[time_col].strftime("%Y-%m-%d"), []).append(r)
        for date, part in by_date.items():
            table = pa.Table.from_pylist(part, schema=schema).replace_schema_metadata({
                "feeder.dataset": name, "feeder.topic": TOPIC, "feeder.partition": "0",
                "feeder.first_offset": "0", "feeder.last_offset": "99",
                "feeder.writer_version": "0.1.0", "feeder.writer_id": "docs-test",
            })
            out = root / name / f"date={date}"
            out.mkdir(parents=True, exist_ok=True)
            names = schema.names
            pq.write_table(
                table,
                out / f"{TOPIC}+0+{0:020}+{99:020}.parquet",
                compression="zstd",
                sorting_columns=[
                    pq.SortingColumn(names.index("device_id")),
                    pq.SortingColumn(names.index(time_col)),
                ],
            )


def blocks(lang: str) -> list[str]:
    text = DOC.read_text()
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    write_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    # the Spark example's driver binds to loopback only
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    return tmp_path


def test_the_doc_has_examples_for_each_engine():
    assert len(blocks("sql")) >= 5
    assert len(blocks("python")) >= 4
    text = DOC.read_text()
    for engine in ("DuckDB", "pyarrow", "pandas", "Spark"):
        assert f"## {engine}" in text


@pytest.mark.parametrize("index", range(len(blocks("sql"))))
def test_duckdb_examples_run(data_dir, index):
    query = blocks("sql")[index]
    result = duckdb.connect().sql(query).fetchall()
    if "HAVING count(*) > 1" in query:
        assert result == [], "the exactly-once query must be empty"
    else:
        assert result, f"example returned no rows:\n{query}"


def test_duckdb_sees_hive_dates_and_contract_types(data_dir):
    con = duckdb.connect()
    # the guide's first query over readings (other datasets' sections may come first)
    first = next(b for b in blocks("sql") if "/readings/" in b)
    dates = con.sql(first).fetchall()
    assert [str(d) for d, _ in dates] == ["2024-03-10", "2024-03-11"]
    assert sum(n for _, n in dates) == 47  # 2 meters × 8 frames × 2 readings + 15 intervals


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(data_dir, index):
    code = blocks("python")[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{DOC.name}[python {index}]", "exec"), {"__name__": "__doc_example__"})
    assert out.getvalue().strip(), "every example prints its result"
