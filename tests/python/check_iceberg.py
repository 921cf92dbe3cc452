"""Checks Feeder's Iceberg tables with pyiceberg, a reader that is not Feeder's code.

Why: the writer's exactly-once claim for Iceberg mode is about what a lakehouse engine
sees through the catalog, so the judge opens the tables the way an analyst would
(pyiceberg's SqlCatalog on the same SQLite file) and checks, per table:

- every data file is added by exactly one snapshot, and the current snapshot reads each
  once (no file referenced twice);
- each snapshot Feeder made covers one flushed offset range, and the ranges of one
  topic-partition never overlap (one snapshot per committed flush, no range appended
  twice);
- with --frames/--readings: `frames` holds every acked frame once and `readings` every
  acked reading once.

`evolve` adds a column to `readings` as a later Feeder version would, appends one row
that carries it, and shows the older snapshots still read (their rows with a null in
the new column) next to the new row.

Prints a JSON summary; exits 1 with the failures listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.types import StringType

FEEDER_TOPIC = "feeder.topic"
EVOLVED_COLUMN = "quality"


def catalog(args: argparse.Namespace) -> SqlCatalog:
    return SqlCatalog(args.catalog_name, uri=args.uri, warehouse=args.warehouse)


def added_files(table) -> list[str]:
    """Paths of the data files each snapshot added, over the whole history."""
    out = []
    for snap in table.snapshots():
        for manifest in snap.manifests(table.io):
            if manifest.added_snapshot_id != snap.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.status == ManifestEntryStatus.ADDED:
                    out.append(entry.data_file.file_path)
    return out


def feeder_ranges(table) -> tuple[list[tuple[str, int, int, int]], int]:
    """(topic, partition, first, last) of each Feeder snapshot, and the others' count."""
    ranges, foreign = [], 0
    for snap in table.snapshots():
        props = snap.summary.additional_properties if snap.summary else {}
        if FEEDER_TOPIC not in props:
            foreign += 1
            continue
        ranges.append((
            props[FEEDER_TOPIC],
            int(props["feeder.partition"]),
            int(props["feeder.first-offset"]),
            int(props["feeder.last-offset"]),
        ))
    return ranges, foreign


def check_table(table, failures: list[str]) -> dict:
    name = table.name()[-1]
    added = added_files(table)
    twice = [f for f, n in Counter(added).items() if n > 1]
    if twice:
        failures.append(f"{name}: data files added by more than one snapshot: {twice[:3]}")
    current = [t.file.file_path for t in table.scan().plan_files()]
    if len(set(current)) != len(current):
        failures.append(f"{name}: the current snapshot references a data file twice")
    if set(current) != set(added):
        failures.append(f"{name}: {len(set(added) - set(current))} added files are not current")
    ranges, foreign = feeder_ranges(table)
    by_tp = defaultdict(list)
    for topic, partition, first, last in ranges:
        if first > last:
            failures.append(f"{name}: snapshot range {first}..{last} is empty")
        by_tp[(topic, partition)].append((first, last))
    for tp, rs in by_tp.items():
        rs.sort()
        for (_, prev_last), (first, _) in zip(rs, rs[1:]):
            if first <= prev_last:
                failures.append(f"{name}: {tp[0]}/{tp[1]} offsets {first}..{prev_last} appended twice")
    return {
        "snapshots": len(ranges) + foreign,
        "feeder_snapshots": len(ranges),
        "other_snapshots": foreign,
        "data_files": len(current),
    }


def read(table, columns: tuple[str, ...]) -> pa.Table:
    return table.scan(selected_fields=columns).to_arrow()


def distinct(t: pa.Table, columns: list[str]) -> int:
    return t.group_by(columns).aggregate([]).num_rows


def check(args: argparse.Namespace) -> int:
    cat = catalog(args)
    failures: list[str] = []
    summary = {}
    for ident in sorted(cat.list_tables(args.namespace)):
        table = cat.load_table(ident)
        summary[ident[-1]] = check_table(table, failures)
    frames_t = cat.load_table(f"{args.namespace}.frames")
    frames = read(frames_t, ("device_id", "seq"))
    readings_t = cat.load_table(f"{args.namespace}.readings")
    readings = read(readings_t, ("device_id", "seq", "ts", "obis"))
    summary["frames"]["rows"] = frames.num_rows
    summary["readings"]["rows"] = readings.num_rows
    if distinct(frames, ["device_id", "seq"]) != frames.num_rows:
        failures.append("frames: a (device_id, seq) is stored more than once")
    if distinct(readings, ["device_id", "seq", "ts", "obis"]) != readings.num_rows:
        failures.append("readings: a (device_id, seq, ts, obis) is stored more than once")
    if args.frames is not None and frames.num_rows != args.frames:
        failures.append(f"frames: {frames.num_rows} rows, expected {args.frames}")
    if args.readings is not None and readings.num_rows != args.readings:
        failures.append(f"readings: {readings.num_rows} rows, expected {args.readings}")
    print(json.dumps({"tables": summary, "failures": failures}, sort_keys=True))
    return 1 if failures else 0


def evolve(args: argparse.Namespace) -> int:
    """Adds `quality` to readings, appends one row carrying it, reads old and new."""
    cat = catalog(args)
    table = cat.load_table(f"{args.namespace}.readings")
    before = table.current_snapshot().snapshot_id
    rows_before = table.scan().to_arrow().num_rows
    with table.update_schema() as update:
        update.add_column(EVOLVED_COLUMN, StringType(), doc="added by a later writer version")
    table = cat.load_table(f"{args.namespace}.readings")
    one = table.scan(limit=1).to_arrow()

    def with_value(t: pa.Table, name: str, value) -> pa.Table:
        field = t.schema.field(name)
        return t.set_column(t.schema.get_field_index(name), field, pa.array([value], field.type))

    # a row no device sent (seq 2^62), carrying the new column
    future = with_value(with_value(one, "seq", 2**62), EVOLVED_COLUMN, "measured")
    table.append(future)
    table = cat.load_table(f"{args.namespace}.readings")
    now = table.scan().to_arrow()
    old = table.scan(snapshot_id=before).to_arrow()
    failures = []
    if old.num_rows != rows_before:
        failures.append(f"the snapshot before the change reads {old.num_rows}, not {rows_before}")
    if now.num_rows != rows_before + 1:
        failures.append(f"now {now.num_rows} rows, expected {rows_before + 1}")
    quality = now.column(EVOLVED_COLUMN)
    if pc.sum(pc.is_valid(quality)).as_py() != 1 or quality.null_count != rows_before:
        failures.append("old rows must read null in the new column, the new row its value")
    print(json.dumps({
        "snapshot_before": before, "rows_before": rows_before, "rows_now": now.num_rows,
        "new_column_set": pc.sum(pc.is_valid(quality)).as_py(), "failures": failures,
    }, sort_keys=True))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["check", "evolve"])
    p.add_argument("--uri", required=True, help="SQLAlchemy URI, e.g. sqlite:////path/catalog.db")
    p.add_argument("--warehouse", required=True)
    p.add_argument("--catalog-name", default="feeder")
    p.add_argument("--namespace", default="feeder")
    p.add_argument("--frames", type=int)
    p.add_argument("--readings", type=int)
    args = p.parse_args(argv)
    return check(args) if args.command == "check" else evolve(args)


if __name__ == "__main__":
    sys.exit(main())
