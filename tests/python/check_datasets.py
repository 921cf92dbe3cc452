#!/usr/bin/env python3
"""Independent checker of the Parquet datasets that Feeder's writer produces.

Why: shared/datasets.md is the analysts' contract. Analysts read the output with
DuckDB, pyarrow, pandas, Spark..., not with Feeder's Rust code, so the end-to-end tests
judge the writer's output with two of those readers, each on its own:

* DuckDB, exactly as the contract shows:
  ``read_parquet('<root>/<dataset>/**/*.parquet', hive_partitioning = true)``;
* pyarrow.dataset with Hive partitioning over the ``*.parquet`` files it finds itself,
  skipping hidden files the way pyarrow/pandas directory readers do.

Both must agree with each other and with the expectations of the test that produced
the data. Checks:

* per acked frame (device_id, seq): exactly R ``readings`` rows, S ``telematics`` rows,
  E ``events`` rows and exactly one ``frames`` row;
* the contract's exactly-once query ``SELECT device_id, seq, ts, obis, count(*) FROM
  readings GROUP BY ALL HAVING count(*) > 1`` is empty;
* no row in readings/telematics/events/frames for an ``absent`` (device_id, seq);
* each ``quarantined`` (device_id, seq, reason) has at least one quarantine row;
* the total number of readings equals the sum of R;
* column types match datasets.md (e.g. readings.ts timestamp(ms, UTC), seq uint64);
* layout ``<dataset>/date=YYYY-MM-DD/<file>.parquet``, with date the UTC date of ts;
* no half-written file (``.tmp*``) is visible to the ``*.parquet`` glob;
* a few value rules of the contract (readings.value = value_raw x 10^scaler, unit
  names, event kinds, anomaly severities).

A dataset directory that does not exist is an empty dataset (no vehicles, no
telematics), not an error.

Usage::

    check_datasets.py --data ROOT --expect EXPECT.json   # all checks
    check_datasets.py --data ROOT                        # checks needing no expectations
    check_datasets.py --data ROOT --summary-only         # just count rows

EXPECT.json::

    {"acked":       [{"device_id": "...", "seq": 1, "readings": 4, "samples": 0, "events": 0}],
     "absent":      [{"device_id": "...", "seq": 2}],
     "quarantined": [{"device_id": "...", "seq": 3, "reason": "bad_signature"}]}

("samples" and "events" default to 0.) Prints one JSON object on stdout::

    {"ok": true, "readings": n, "telematics": n, "events": n, "frames": n,
     "quarantine": n, "anomalies": n, "failures": [...], "warnings": [...], ...}

and exits 0 iff ok (1 otherwise, 2 for bad usage). Failures are prefixed with the
reader(s) that saw them: ``[duckdb]``, ``[pyarrow]`` or ``[both]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

DATASETS = ("readings", "telematics", "events", "anomalies", "quarantine", "frames")
# Datasets whose rows belong to one accepted frame, keyed by (device_id, seq).
FRAME_ROW_DATASETS = ("readings", "telematics", "events", "frames")
# Datasets partitioned by the UTC date of their `ts` column.
TS_PARTITIONED = ("readings", "telematics", "events")

UTC_NAMES = {"UTC", "Etc/UTC", "+00:00", "Z"}
READING_UNITS = {"Wh", "varh", "W", "var", "VA", "VAh", "A", "V", "Hz", "m3", "degC"}
EVENT_KINDS = {
    "event_unspecified", "power_outage", "power_restored", "cover_opened", "magnetic_tamper",
    "reverse_flow", "firmware_updated", "clock_adjusted", "module_reset",
}
SEVERITIES = {"info", "warning", "critical"}
PARTITION_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
MAX_FAILURES = 200  # beyond this the list is cut (the count is still reported)
MAX_EXAMPLES = 5  # sample rows quoted in one failure message


# --------------------------------------------------------------------------- contract types


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _is_ts_utc(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) and t.tz in UTC_NAMES


def _is_list_of_string(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type)


@dataclass(frozen=True)
class ColType:
    """A column type of datasets.md, as each reader sees it."""

    name: str  # as written in datasets.md
    duckdb: str  # DuckDB's type name for it
    arrow: pa.DataType  # canonical Arrow type (used for empty datasets)
    accepts: Callable[[pa.DataType], bool]  # which Arrow types store it faithfully


STRING = ColType("string", "VARCHAR", pa.string(), _is_string)
BINARY = ColType("binary", "BLOB", pa.binary(), _is_binary)
UINT64 = ColType("uint64", "UBIGINT", pa.uint64(), pa.types.is_uint64)
UINT32 = ColType("uint32", "UINTEGER", pa.uint32(), pa.types.is_uint32)
INT64 = ColType("int64", "BIGINT", pa.int64(), pa.types.is_int64)
INT32 = ColType("int32", "INTEGER", pa.int32(), pa.types.is_int32)
FLOAT64 = ColType("float64", "DOUBLE", pa.float64(), pa.types.is_float64)
BOOL = ColType("bool", "BOOLEAN", pa.bool_(), pa.types.is_boolean)
TS_MS_UTC = ColType(
    "timestamp(ms, UTC)", "TIMESTAMP WITH TIME ZONE", pa.timestamp("ms", tz="UTC"),
    lambda t: _is_ts_utc(t) and t.unit == "ms",
)
# anomalies' timestamps: datasets.md fixes UTC but not the unit.
TS_UTC = ColType("timestamp(UTC)", "TIMESTAMP WITH TIME ZONE", pa.timestamp("ms", tz="UTC"), _is_ts_utc)
LIST_STRING = ColType("list<string>", "VARCHAR[]", pa.list_(pa.string()), _is_list_of_string)

SCHEMAS: dict[str, dict[str, ColType]] = {
    "readings": {
        "device_id": STRING, "seq": UINT64, "ts": TS_MS_UTC, "interval_s": UINT32,
        "obis": STRING, "value": FLOAT64, "value_raw": INT64, "scaler": INT32, "unit": STRING,
        "status": UINT32, "flags": LIST_STRING, "received_at": TS_MS_UTC,
    },
    "telematics": {
        "device_id": STRING, "seq": UINT64, "ts": TS_MS_UTC, "lat": FLOAT64, "lon": FLOAT64,
        "speed_m_s": FLOAT64, "heading_deg": FLOAT64, "odometer_m": UINT64, "ignition": BOOL,
        "battery_v": FLOAT64, "flags": LIST_STRING, "received_at": TS_MS_UTC,
    },
    "events": {
        "device_id": STRING, "seq": UINT64, "ts": TS_MS_UTC, "kind": STRING, "detail": STRING,
        "received_at": TS_MS_UTC,
    },
    "anomalies": {
        "detected_at": TS_UTC, "device_id": STRING, "cohort": STRING, "rule": STRING,
        "severity": STRING, "ts_from": TS_UTC, "ts_to": TS_UTC, "detail": STRING, "seq": UINT64,
    },
    "quarantine": {
        "received_at": TS_MS_UTC, "device_id": STRING, "seq": UINT64, "reason": STRING,
        "detail": STRING, "raw": BINARY,
    },
    "frames": {
        "device_id": STRING, "seq": UINT64, "key_id": STRING, "received_at": TS_MS_UTC,
        "edge_id": STRING, "payload": BINARY, "signature": BINARY,
    },
}


# --------------------------------------------------------------------------- expectations


class UsageError(Exception):
    """Bad command line or expectation file."""


@dataclass
class Expectations:
    acked: list[dict[str, Any]] = field(default_factory=list)
    absent: list[tuple[str, int]] = field(default_factory=list)
    quarantined: list[tuple[str, int, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "Expectations":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read expectation file {path}: {e}") from e
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: top level must be an object")
        unknown = set(raw) - {"acked", "absent", "quarantined"}
        if unknown:
            raise UsageError(f"{path}: unknown keys {sorted(unknown)}")

        def entries(name: str) -> list[dict[str, Any]]:
            val = raw.get(name, [])
            if not isinstance(val, list) or not all(isinstance(e, dict) for e in val):
                raise UsageError(f"{path}: '{name}' must be a list of objects")
            return val

        def key(name: str, i: int, e: dict[str, Any]) -> tuple[str, int]:
            d, s = e.get("device_id"), e.get("seq")
            if not isinstance(d, str) or not d or not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise UsageError(f"{path}: {name}[{i}] needs a string device_id and an integer seq >= 0: {e}")
            return d, s

        def count(name: str, i: int, e: dict[str, Any], field_name: str, required: bool) -> int:
            v = e.get(field_name, None if required else 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UsageError(f"{path}: {name}[{i}].{field_name} must be an integer >= 0: {e}")
            return v

        exp = cls()
        seen: dict[tuple[str, int], str] = {}
        for i, e in enumerate(entries("acked")):
            k = key("acked", i, e)
            if k in seen:
                raise UsageError(f"{path}: {k} listed twice (acked and {seen[k]})")
            seen[k] = "acked"
            exp.acked.append({
                "device_id": k[0], "seq": k[1],
                "readings": count("acked", i, e, "readings", True),
                "telematics": count("acked", i, e, "samples", False),
                "events": count("acked", i, e, "events", False),
            })
        for i, e in enumerate(entries("absent")):
            k = key("absent", i, e)
            if seen.get(k) == "acked":
                raise UsageError(f"{path}: {k} is both acked and absent")
            seen.setdefault(k, "absent")
            exp.absent.append(k)
        for i, e in enumerate(entries("quarantined")):
            k = key("quarantined", i, e)
            reason = e.get("reason")
            if not isinstance(reason, str) or not reason:
                raise UsageError(f"{path}: quarantined[{i}] needs a string reason: {e}")
            exp.quarantined.append((k[0], k[1], reason))
        return exp


# --------------------------------------------------------------------------- file tree


@dataclass
class TreeScan:
    """What is on disk, independent of either reader."""

    present: set[str] = field(default_factory=set)  # dataset dirs that exist
    visible: dict[str, list[Path]] = field(default_factory=dict)  # non-hidden *.parquet
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def scan_tree(root: Path) -> TreeScan:
    scan = TreeScan()
    for name in DATASETS:
        base = root / name
        scan.visible[name] = []
        if not base.is_dir():
            if base.exists():
                scan.failures.append(f"{base} is not a directory")
            continue
        scan.present.add(name)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in sorted(filenames):
                path = Path(dirpath) / fn
                rel = path.relative_to(base)
                is_parquet = fn.endswith(".parquet")
                if fn.startswith(".tmp"):
                    if is_parquet:
                        scan.failures.append(
                            f"half-written file visible to the '{name}/**/*.parquet' glob: {rel} "
                            "(files must appear atomically under their final name)"
                        )
                    else:
                        scan.warnings.append(f"leftover temporary file {name}/{rel}")
                    continue
                if not is_parquet:
                    if not fn.startswith((".", "_")):
                        scan.warnings.append(
                            f"non-Parquet file {name}/{rel}: pyarrow/pandas directory readers would try to read it"
                        )
                    continue
                if fn.startswith((".", "_")):
                    scan.failures.append(
                        f"hidden Parquet file {name}/{rel}: DuckDB's glob reads it, pyarrow/pandas skip it"
                    )
                    continue
                parts = rel.parts
                if len(parts) != 2 or not PARTITION_RE.match(parts[0]):
                    scan.failures.append(
                        f"{name}/{rel} is not laid out as {name}/date=YYYY-MM-DD/<file>.parquet"
                    )
                    continue
                scan.visible[name].append(path)
    return scan


# --------------------------------------------------------------------------- readers


@dataclass
class Snapshot:
    """What one reader saw; compared against expectations and the other reader."""

    engine: str
    totals: dict[str, int] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)
    per_frame: dict[str, Counter] = field(default_factory=dict)  # dataset -> (dev, seq) -> rows
    duplicates: list[tuple] = field(default_factory=list)
    quarantine: set[tuple[str, int, str]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def usable(self, *datasets: str) -> bool:
        return not any(d in self.unreadable for d in datasets)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _examples(rows: list[tuple]) -> str:
    shown = ", ".join(str(tuple(r)) for r in rows[:MAX_EXAMPLES])
    more = f" and {len(rows) - MAX_EXAMPLES} more" if len(rows) > MAX_EXAMPLES else ""
    return shown + more


def read_with_duckdb(root: Path, counts_only: bool) -> Snapshot:
    snap = Snapshot("duckdb")
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    columns: dict[str, dict[str, str]] = {}

    for name in DATASETS:
        base = root / name
        if not base.is_dir():
            # Missing dataset directory = empty dataset: a typed empty table.
            cols = ", ".join(f"{_ident(c)} {t.duckdb}" for c, t in SCHEMAS[name].items())
            con.execute(f"CREATE TABLE {_ident(name)} ({cols})")
        else:
            glob = f"{base.as_posix()}/**/*.parquet"
            try:
                con.execute(
                    f"CREATE VIEW {_ident(name)} AS SELECT * FROM "
                    f"read_parquet({_quote(glob)}, hive_partitioning = true)"
                )
                columns[name] = {r[0]: r[1] for r in con.execute(f"DESCRIBE {_ident(name)}").fetchall()}
            except duckdb.Error as e:
                if "No files found" in str(e):
                    cols = ", ".join(f"{_ident(c)} {t.duckdb}" for c, t in SCHEMAS[name].items())
                    con.execute(f"DROP VIEW IF EXISTS {_ident(name)}")
                    con.execute(f"CREATE TABLE {_ident(name)} ({cols})")
                else:
                    snap.failures.append(f"cannot open {name}: {_one_line(e)}")
                    snap.unreadable.add(name)
                    continue
        try:
            snap.totals[name] = con.execute(f"SELECT count(*) FROM {_ident(name)}").fetchone()[0]
        except duckdb.Error as e:
            snap.failures.append(f"cannot read {name}: {_one_line(e)}")
            snap.unreadable.add(name)
    if counts_only:
        return snap

    # Column types, as DuckDB maps them.
    for name, cols in columns.items():
        if name in snap.unreadable:
            continue
        for col, want in SCHEMAS[name].items():
            got = cols.get(col)
            if got is None:
                snap.failures.append(f"{name}: missing column {col} ({want.name})")
            elif got != want.duckdb:
                snap.failures.append(f"{name}.{col}: type {got}, want {want.duckdb} ({want.name})")

    def has(name: str, *cols: str) -> bool:
        if name in snap.unreadable:
            return False
        present = columns.get(name, SCHEMAS[name])
        return all(c in present for c in cols)

    def query(what: str, sql: str) -> list[tuple] | None:
        try:
            return con.execute(sql).fetchall()
        except duckdb.Error as e:
            snap.failures.append(f"{what}: query failed: {_one_line(e)}")
            return None

    for name in FRAME_ROW_DATASETS:
        if has(name, "device_id", "seq"):
            rows = query(f"{name} per frame", f"SELECT device_id, seq, count(*) FROM {_ident(name)} GROUP BY ALL")
            if rows is not None:
                snap.per_frame[name] = Counter({(d, s): n for d, s, n in rows})
                continue
        snap.unreadable.add(name)

    if has("readings", "device_id", "seq", "ts", "obis"):
        # The contract's exactly-once query, verbatim, wrapped to print ts as epoch ms.
        rows = query(
            "readings duplicates",
            "SELECT device_id, seq, epoch_ms(ts), obis, n FROM ("
            "SELECT device_id, seq, ts, obis, count(*) AS n FROM readings "
            "GROUP BY ALL HAVING count(*) > 1) ORDER BY ALL",
        )
        if rows is not None:
            snap.duplicates = [tuple(r) for r in rows]

    if has("quarantine", "device_id", "seq", "reason"):
        rows = query("quarantine", "SELECT DISTINCT device_id, seq, reason FROM quarantine")
        if rows is not None:
            snap.quarantine = {tuple(r) for r in rows}

    # Contract rules on values; each query returns offending rows.
    rules: list[tuple[str, tuple[str, ...], str, str]] = []
    for name in TS_PARTITIONED:
        if name in columns:  # hive `date` exists only for datasets read from files
            rules.append((
                name, ("device_id", "seq", "ts", "date"),
                "rows whose date= partition is not the UTC date of ts (device_id, seq, ts, date)",
                f"SELECT device_id, seq, CAST(ts AS VARCHAR), CAST(date AS VARCHAR) FROM {_ident(name)} "
                "WHERE strftime(ts, '%Y-%m-%d') IS DISTINCT FROM CAST(date AS VARCHAR)",
            ))
    rules += [
        ("readings", ("device_id", "seq", "obis", "value", "value_raw", "scaler"),
         "readings whose value != value_raw * 10^scaler (device_id, seq, obis, value, value_raw, scaler)",
         "SELECT device_id, seq, obis, value, value_raw, scaler FROM readings "
         "WHERE value IS NULL OR value_raw IS NULL OR scaler IS NULL OR "
         "abs(value - value_raw * pow(10, scaler)) > 1e-9 * greatest(1.0, abs(value))"),
        ("readings", ("unit",),
         f"readings with a unit outside {sorted(READING_UNITS)} (unit, rows)",
         # NULL is allowed: a reading sent with UNIT_UNSPECIFIED has no unit.
         "SELECT unit, count(*) FROM readings WHERE unit NOT IN ("
         + ", ".join(_quote(u) for u in sorted(READING_UNITS)) + ") GROUP BY ALL"),
        ("events", ("kind",),
         "events whose kind is not a lower-case EventKind name (kind, rows)",
         "SELECT kind, count(*) FROM events WHERE kind IS NULL OR kind NOT IN ("
         + ", ".join(_quote(k) for k in sorted(EVENT_KINDS)) + ") GROUP BY ALL"),
        ("anomalies", ("severity",),
         f"anomalies with a severity outside {sorted(SEVERITIES)} (severity, rows)",
         "SELECT severity, count(*) FROM anomalies WHERE severity IS NULL OR severity NOT IN ("
         + ", ".join(_quote(s) for s in sorted(SEVERITIES)) + ") GROUP BY ALL"),
    ]
    for name, cols, what, sql in rules:
        if has(name, *cols):
            rows = query(what, sql + " LIMIT 100")
            if rows:
                snap.failures.append(f"{what}: {_examples(rows)}")
    con.close()
    return snap


def read_with_pyarrow(root: Path, scan: TreeScan, counts_only: bool) -> Snapshot:
    snap = Snapshot("pyarrow")
    datasets: dict[str, ds.Dataset] = {}
    for name in DATASETS:
        files = scan.visible.get(name, [])
        if not files:
            snap.totals[name] = 0
            continue
        try:
            if not counts_only:
                for f in files:
                    _check_arrow_schema(snap, name, f, pq.read_schema(f))
            datasets[name] = ds.dataset(
                [str(f) for f in files],
                format="parquet",
                partitioning=ds.partitioning(flavor="hive"),
                partition_base_dir=str(root / name),
            )
            snap.totals[name] = datasets[name].count_rows()
        except (pa.ArrowException, OSError) as e:
            snap.failures.append(f"cannot read {name}: {_one_line(e)}")
            snap.unreadable.add(name)
    if counts_only:
        return snap

    def table(name: str, cols: list[str]) -> pa.Table | None:
        if name in snap.unreadable:
            return None
        if name not in datasets:  # empty dataset
            return pa.table({c: pa.array([], SCHEMAS[name][c].arrow) for c in cols})
        missing = [c for c in cols if c not in datasets[name].schema.names]
        if missing:
            return None  # reported by the schema check
        try:
            return datasets[name].to_table(columns=cols)
        except (pa.ArrowException, OSError) as e:
            snap.failures.append(f"cannot read {name} columns {cols}: {_one_line(e)}")
            snap.unreadable.add(name)
            return None

    for name in FRAME_ROW_DATASETS:
        t = table(name, ["device_id", "seq"])
        if t is None:
            snap.unreadable.add(name)
            continue
        g = t.group_by(["device_id", "seq"]).aggregate([([], "count_all")])
        snap.per_frame[name] = Counter({
            (d, s): n for d, s, n in zip(
                g["device_id"].to_pylist(), g["seq"].to_pylist(), g["count_all"].to_pylist()
            )
        })

    t = table("readings", ["device_id", "seq", "ts", "obis"])
    if t is not None:
        g = t.group_by(["device_id", "seq", "ts", "obis"]).aggregate([([], "count_all")])
        g = g.filter(pc.greater(g["count_all"], 1))
        try:  # print ts as epoch ms, like the DuckDB side
            ts_ms = pc.cast(pc.cast(g["ts"], pa.timestamp("ms", tz="UTC")), pa.int64())
        except pa.ArrowException:
            ts_ms = pc.cast(g["ts"], pa.string())
        snap.duplicates = sorted(zip(
            g["device_id"].to_pylist(), g["seq"].to_pylist(), ts_ms.to_pylist(),
            g["obis"].to_pylist(), g["count_all"].to_pylist(),
        ), key=lambda r: tuple("" if v is None else v for v in r))

    t = table("quarantine", ["device_id", "seq", "reason"])
    if t is not None:
        snap.quarantine = set(zip(t["device_id"].to_pylist(), t["seq"].to_pylist(), t["reason"].to_pylist()))
    return snap


def _check_arrow_schema(snap: Snapshot, name: str, path: Path, schema: pa.Schema) -> None:
    rel = f"{name}/{path.parent.name}/{path.name}"
    for col, want in SCHEMAS[name].items():
        idx = schema.get_field_index(col)
        if idx < 0:
            snap.failures.append(f"{rel}: missing column {col} ({want.name})")
        elif not want.accepts(schema.field(idx).type):
            snap.failures.append(f"{rel}: column {col} is {schema.field(idx).type}, want {want.name}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:500]


# --------------------------------------------------------------------------- evaluation


def evaluate(snap: Snapshot, exp: Expectations | None) -> list[str]:
    """Failures of one reader's view: contract invariants, then the expectations."""
    out = list(snap.failures)
    if snap.usable("readings") and snap.duplicates:
        out.append(
            f"readings: {len(snap.duplicates)} (device_id, seq, ts_ms, obis) keys stored more than once "
            f"(exactly-once violated): {_examples(snap.duplicates)}"
        )
    if exp is None:
        return out

    for a in exp.acked:
        k = (a["device_id"], a["seq"])
        for name, want in (("readings", a["readings"]), ("telematics", a["telematics"]),
                           ("events", a["events"]), ("frames", 1)):
            if not snap.usable(name):
                continue
            got = snap.per_frame[name][k]
            if got != want:
                out.append(f"{name}: acked frame {k} has {got} rows, expected {want}")
    for k in exp.absent:
        for name in FRAME_ROW_DATASETS:
            if snap.usable(name) and snap.per_frame[name][k]:
                out.append(f"{name}: frame {k} must be absent but has {snap.per_frame[name][k]} rows")
    if snap.usable("quarantine"):
        for d, s, reason in exp.quarantined:
            if (d, s, reason) not in snap.quarantine:
                have = sorted({r for qd, qs, r in snap.quarantine if (qd, qs) == (d, s)})
                hint = f" (rows for it have reasons {have})" if have else " (no quarantine row for it at all)"
                out.append(f"quarantine: no row for ({d!r}, {s}) with reason {reason!r}{hint}")
    if snap.usable("readings"):
        want_total = sum(a["readings"] for a in exp.acked)
        if snap.totals.get("readings") != want_total:
            out.append(
                f"readings: {snap.totals.get('readings')} rows in total, expected {want_total} "
                "(the sum over acked frames)"
            )
    return out


def compare(a: Snapshot, b: Snapshot, per_frame: bool) -> list[str]:
    """Where the two readers disagree about the same files."""
    out = []
    for name in DATASETS:
        if a.usable(name) and b.usable(name) and a.totals.get(name) != b.totals.get(name):
            out.append(
                f"{name}: {a.engine} counts {a.totals.get(name)} rows, {b.engine} counts {b.totals.get(name)}"
            )
    if per_frame:
        for name in FRAME_ROW_DATASETS:
            if name in a.per_frame and name in b.per_frame and a.per_frame[name] != b.per_frame[name]:
                diff = sorted(
                    (k, a.per_frame[name][k], b.per_frame[name][k])
                    for k in set(a.per_frame[name]) | set(b.per_frame[name])
                    if a.per_frame[name][k] != b.per_frame[name][k]
                )
                out.append(f"{name}: per-frame row counts differ ((device_id, seq), {a.engine}, {b.engine}): "
                           f"{_examples(diff)}")
    return out


def merge(per_engine: dict[str, list[str]]) -> list[str]:
    """Prefix each failure with the reader(s) that reported it; same text -> [both]."""
    engines = list(per_engine)
    seen_by: dict[str, list[str]] = {}
    for eng in engines:
        for msg in per_engine[eng]:
            seen_by.setdefault(msg, [])
            if eng not in seen_by[msg]:
                seen_by[msg].append(eng)
    out = []
    for msg, by in seen_by.items():
        tag = "both" if len(by) == len(engines) and len(engines) > 1 else "+".join(by)
        out.append(f"[{tag}] {msg}")
    return out


def check(root: Path, exp: Expectations | None, summary_only: bool = False) -> dict[str, Any]:
    """Run the checks; return the JSON-able report."""
    report: dict[str, Any] = {"ok": False, "data": str(root)}
    failures: list[str] = []
    warnings: list[str] = []

    if not root.is_dir():
        failures.append(f"[tree] data root {root} does not exist or is not a directory")
        snaps = [Snapshot("duckdb", totals={d: 0 for d in DATASETS}),
                 Snapshot("pyarrow", totals={d: 0 for d in DATASETS})]
    else:
        scan = scan_tree(root)
        duck = read_with_duckdb(root, counts_only=summary_only)
        arrow = read_with_pyarrow(root, scan, counts_only=summary_only)
        snaps = [duck, arrow]
        if summary_only:
            failures += merge({"duckdb": duck.failures, "pyarrow": arrow.failures})
        else:
            failures += [f"[tree] {m}" for m in scan.failures]
            warnings += scan.warnings
            failures += merge({"duckdb": evaluate(duck, exp), "pyarrow": evaluate(arrow, exp)})
            failures += [f"[duckdb vs pyarrow] {m}" for m in compare(duck, arrow, per_frame=True)]

    primary = next((s for s in snaps if not s.unreadable), snaps[0])
    for name in DATASETS:
        report[name] = primary.totals.get(name)
    report["engines"] = {s.engine: {d: s.totals.get(d) for d in DATASETS} for s in snaps}
    report["ok"] = not failures
    report["failure_count"] = len(failures)
    if len(failures) > MAX_FAILURES:
        failures = failures[:MAX_FAILURES] + [f"... {len(failures) - MAX_FAILURES} more failures not shown"]
    report["failures"] = failures
    report["warnings"] = warnings
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="dataset root (contains readings/, frames/, ...)")
    p.add_argument("--expect", type=Path, help="expectation file (JSON)")
    p.add_argument("--summary-only", action="store_true", help="only count rows per dataset")
    args = p.parse_args(argv)
    if args.summary_only and args.expect:
        p.error("--summary-only takes no --expect file")

    try:
        exp = Expectations.load(args.expect) if args.expect else None
    except UsageError as e:
        print(f"check_datasets: {e}", file=sys.stderr)
        print(json.dumps({"ok": False, "failures": [f"[usage] {e}"]}))
        return 1

    report = check(args.data, exp, summary_only=args.summary_only)
    for msg in report["failures"]:
        print(f"check_datasets: FAIL {msg}", file=sys.stderr)
    for msg in report["warnings"]:
        print(f"check_datasets: warning: {msg}", file=sys.stderr)
    print(json.dumps(report, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
