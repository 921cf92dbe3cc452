#!/usr/bin/env python3
"""Independent judge of a chaos run: are the promises the edge made kept in the datasets?

Why a separate checker from check_datasets.py: under kill -9 of the edge, a frame can
reach the broker without its ack reaching the device (the device then gives up on it
after its retries, or resends it and is acked the second time). Such a frame may be
stored once or not at all; only acked frames have an exact expectation. So this
checker holds the datasets to:

* every acked (device_id, seq) has exactly R ``readings`` rows, S ``telematics`` rows,
  E ``events`` rows and one ``frames`` row (R, S, E from the load generator's
  ``--acked-log``): nothing lost, nothing twice;
* no frame is stored twice, acked or not: at most one ``frames`` row per (device_id,
  seq) and the contract's exactly-once query on ``readings`` is empty;
* no frame the edge refused (``--refused``: device_id,seq) has a row in any dataset;
* unacked frames that were stored are counted and reported, not failed.

It reads with DuckDB, exactly as an analyst would (``read_parquet('<root>/<dataset>/**/
*.parquet', hive_partitioning = true)``), and loads the acked log with ``read_csv``, so
a long run's millions of frames are joined inside DuckDB.

Usage::

    check_chaos.py --data ROOT --acked ACKED.csv [--refused REFUSED.csv]

Prints one JSON object (``ok``, counts, ``failures`` with examples) and exits 0 iff ok.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb

FRAME_ROW_DATASETS = ("readings", "telematics", "events", "frames")
# Per acked frame: the dataset and the acked log's column holding its expected row count.
EXPECTED = (("readings", "readings"), ("telematics", "samples"), ("events", "events"))
EXAMPLES = 5


def has_files(root: Path, name: str) -> bool:
    return any((root / name).glob("**/*.parquet"))


def define_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """One view per dataset; an absent dataset is an empty one with the key columns."""
    for name in FRAME_ROW_DATASETS + ("quarantine",):
        if has_files(root, name):
            glob = str(root / name / "**" / "*.parquet").replace("'", "''")
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM "
                f"read_parquet('{glob}', hive_partitioning = true)"
            )
        else:
            con.execute(
                f"CREATE VIEW {name} AS SELECT NULL::VARCHAR AS device_id, "
                "NULL::UBIGINT AS seq, NULL::TIMESTAMP AS ts, NULL::VARCHAR AS obis, "
                "NULL::VARCHAR AS reason WHERE false"
            )


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def check(root: Path, acked: Path, refused: Path | None) -> dict:
    con = duckdb.connect()
    define_views(con, root)
    con.execute(
        "CREATE TABLE acked AS SELECT * FROM read_csv(?, header = true, columns = {"
        "'device_id': 'VARCHAR', 'seq': 'UBIGINT', 'readings': 'BIGINT', "
        "'samples': 'BIGINT', 'events': 'BIGINT'})",
        [str(acked)],
    )
    failures: list[str] = []
    report: dict = {}

    report["acked_frames"] = rows(con, "SELECT count(*) FROM acked")[0][0]
    twice = rows(
        con,
        "SELECT device_id, seq, count(*) FROM acked GROUP BY ALL HAVING count(*) > 1 LIMIT 5",
    )
    if twice:
        failures.append(f"the acked log lists a frame more than once: {twice}")
    for dataset, column in EXPECTED:
        report[f"acked_{dataset}"] = rows(con, f"SELECT coalesce(sum({column}), 0) FROM acked")[0][0]
    for dataset in FRAME_ROW_DATASETS:
        report[f"stored_{dataset}"] = rows(con, f"SELECT count(*) FROM {dataset}")[0][0]

    # every acked frame: exactly its rows, one provenance row
    for dataset, column in EXPECTED + (("frames", None),):
        want = f"a.{column}" if column else "1"
        bad = rows(
            con,
            f"""
            WITH got AS (SELECT device_id, seq, count(*) AS n FROM {dataset} GROUP BY ALL)
            SELECT a.device_id, a.seq, {want} AS want, coalesce(g.n, 0) AS got
            FROM acked a LEFT JOIN got g USING (device_id, seq)
            WHERE coalesce(g.n, 0) <> {want}
            ORDER BY got, a.device_id, a.seq
            """,
        )
        if bad:
            lost = sum(1 for b in bad if b[3] < b[2])
            failures.append(
                f"{dataset}: {len(bad)} acked frames with the wrong row count "
                f"({lost} short, {len(bad) - lost} over); (device, seq, want, got): {bad[:EXAMPLES]}"
            )
        report[f"acked_frames_wrong_{dataset}"] = len(bad)

    # nothing twice, acked or not
    doubled = rows(
        con,
        "SELECT device_id, seq, count(*) FROM frames GROUP BY ALL HAVING count(*) > 1 "
        f"ORDER BY ALL LIMIT {EXAMPLES}",
    )
    if doubled:
        failures.append(f"frames: stored more than once (device, seq, n): {doubled}")
    doubled = rows(
        con,
        "SELECT device_id, seq, ts, obis, count(*) FROM readings GROUP BY ALL "
        f"HAVING count(*) > 1 ORDER BY ALL LIMIT {EXAMPLES}",
    )
    if doubled:
        failures.append(f"readings: the exactly-once query is not empty: {doubled}")

    # why acked frames ended in quarantine, if any did (the stream refused them: e.g. a
    # simulated fleet run past its year of backfill is dated in the future)
    report["acked_quarantined"] = dict(
        rows(
            con,
            "SELECT reason, count(*) FROM (SELECT DISTINCT device_id, seq, reason FROM quarantine) "
            "SEMI JOIN acked USING (device_id, seq) GROUP BY ALL ORDER BY ALL",
        )
    )

    # stored without an ack: allowed (the ack was lost with a killed edge), counted
    report["stored_unacked_frames"] = rows(
        con,
        "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM frames) f "
        "ANTI JOIN acked a USING (device_id, seq)",
    )[0][0]

    # refused by the edge: nowhere
    report["refused_frames"] = 0
    if refused is not None:
        con.execute(
            "CREATE TABLE refused AS SELECT * FROM read_csv(?, header = true, columns = {"
            "'device_id': 'VARCHAR', 'seq': 'UBIGINT'})",
            [str(refused)],
        )
        report["refused_frames"] = rows(con, "SELECT count(*) FROM refused")[0][0]
        for dataset in FRAME_ROW_DATASETS + ("quarantine",):
            stored = rows(
                con,
                f"SELECT device_id, seq FROM {dataset} SEMI JOIN refused USING (device_id, seq) "
                f"ORDER BY ALL LIMIT {EXAMPLES}",
            )
            if stored:
                failures.append(f"{dataset}: frames the edge refused are stored: {stored}")

    report["failures"] = failures
    report["ok"] = not failures
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the writer's data root")
    p.add_argument("--acked", type=Path, required=True, help="loadgen --acked-log CSV")
    p.add_argument("--refused", type=Path, help="CSV device_id,seq of frames the edge refused")
    args = p.parse_args(argv)
    report = check(args.data, args.acked, args.refused)
    print(json.dumps(report, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
