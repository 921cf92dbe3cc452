"""Independent check of Feeder's VEE estimates (issue 17), with DuckDB only.

Given a dataset root, a meter and a span (from, to] between two of its register reads
(`1-0:1.8.0`), it checks from the Parquet files alone, never Feeder's code:

- phase `estimated`: every interval of `1-0:1.29.0` missing from `readings` in the span
  has an estimate in force (latest row, status `estimated`), and the estimates plus the
  actual intervals add up exactly to the register difference; the view documented in
  docs/datasets.md (run as written there) returns those intervals as `estimated`;
- phase `superseded`: the skipped readings arrived; each estimate has a later
  `superseded` row carrying the actual value, and the documented view returns only
  actuals for the span, still adding up to the register difference.

Prints one JSON line; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import duckdb

DOC = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"
INTERVAL = "1-0:1.29.0"
REGISTER = "1-0:1.8.0"


def documented_view() -> str:
    """The `CREATE OR REPLACE VIEW intervals` statement of docs/datasets.md, verbatim."""
    for block in re.findall(r"^```sql\n(.*?)^```", DOC.read_text(), flags=re.DOTALL | re.M):
        if "CREATE OR REPLACE VIEW intervals" in block:
            return block.split(";")[0]
    raise SystemExit("docs/datasets.md has no `intervals` view")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--from-ms", type=int, required=True)
    ap.add_argument("--to-ms", type=int, required=True)
    ap.add_argument("--phase", choices=["estimated", "superseded"], required=True)
    a = ap.parse_args()
    con = duckdb.connect()
    # the documented view names `data/...`: run it from the dataset root's parent
    root = Path(a.data)
    view = documented_view().replace("'data/", f"'{root.as_posix()}/")
    con.execute(view)
    readings = f"read_parquet('{root.as_posix()}/readings/**/*.parquet', hive_partitioning = true)"
    estimates = f"read_parquet('{root.as_posix()}/estimates/**/*.parquet', hive_partitioning = true)"
    span = "epoch_ms(ts) > $from AND epoch_ms(ts) <= $to"
    p = {"dev": a.device, "from": a.from_ms, "to": a.to_ms}
    failures: list[str] = []

    def used(sql: str) -> dict:
        return {k: v for k, v in p.items() if f"${k}" in sql}

    def one(sql: str, params=None):
        return con.execute(sql, used(sql)).fetchone()

    scalers = one(
        f"SELECT list(DISTINCT scaler) FROM {readings} WHERE device_id = $dev AND obis IN ('{INTERVAL}', '{REGISTER}')"
    )[0]
    if scalers != [0]:
        failures.append(f"expected scaler 0 readings, got {scalers}")
    reg = dict(
        con.execute(
            f"SELECT epoch_ms(ts), value_raw FROM {readings} WHERE device_id = $dev AND obis = '{REGISTER}' "
            "AND epoch_ms(ts) IN ($from, $to)",
            p,
        ).fetchall()
    )
    if set(reg) != {a.from_ms, a.to_ms}:
        failures.append(f"register reads at both ends of the span missing: {reg}")
        print(json.dumps({"ok": False, "failures": failures}))
        return 1
    register_difference = reg[a.to_ms] - reg[a.from_ms]
    actual_n, actual_sum = one(
        f"SELECT count(DISTINCT ts), coalesce(sum(value_raw), 0) FROM "
        f"(SELECT DISTINCT ON (ts) ts, value_raw FROM {readings} WHERE device_id = $dev AND obis = '{INTERVAL}' AND {span})"
    )
    expected_intervals = (a.to_ms - a.from_ms) // 900_000
    latest = (
        f"(SELECT * FROM {estimates} WHERE device_id = $dev AND obis = '{INTERVAL}' AND {span} "
        "QUALIFY row_number() OVER (PARTITION BY ts ORDER BY created_at DESC, seq DESC) = 1)"
    )
    est_rows, superseded_rows = one(
        f"SELECT count(*) FILTER (WHERE status = 'estimated'), count(*) FILTER (WHERE status = 'superseded') "
        f"FROM {estimates} WHERE device_id = $dev AND obis = '{INTERVAL}' AND {span}"
    )
    in_force_n, in_force_sum, methods = one(
        f"SELECT count(*), coalesce(sum(value_raw), 0), list(DISTINCT method) FROM {latest} WHERE status = 'estimated'"
    )
    latest_superseded = one(f"SELECT count(*) FROM {latest} WHERE status = 'superseded'")[0]
    view = dict(
        (q, (n, s))
        for q, n, s in con.execute(
            f"SELECT quality, count(*), sum(value) FROM intervals WHERE device_id = $dev AND obis = '{INTERVAL}' "
            f"AND {span} GROUP BY quality",
            p,
        ).fetchall()
    )
    view_n = sum(n for n, _ in view.values())
    view_sum = sum(s for _, s in view.values())
    # superseded rows carry the actual: they must match the readings
    mismatched = one(
        f"SELECT count(*) FROM {estimates} e JOIN (SELECT DISTINCT ON (ts) ts, value_raw FROM {readings} "
        f"WHERE device_id = $dev AND obis = '{INTERVAL}') r USING (ts) "
        f"WHERE e.device_id = $dev AND e.obis = '{INTERVAL}' AND e.status = 'superseded' AND e.value_raw <> r.value_raw"
    )[0]
    duplicates = one(
        f"SELECT count(*) FROM (SELECT device_id, seq, ts, obis FROM {readings} "
        "GROUP BY ALL HAVING count(*) > 1)"
    )[0]

    if view_n != expected_intervals:
        failures.append(f"view has {view_n} intervals in the span, want {expected_intervals}")
    if abs(view_sum - register_difference) > 1e-6:
        failures.append(f"view sums to {view_sum}, register difference {register_difference}")
    if duplicates:
        failures.append(f"{duplicates} duplicate readings")
    if a.phase == "estimated":
        missing = expected_intervals - actual_n
        if missing <= 0:
            failures.append("no interval is missing in the span")
        if in_force_n != missing:
            failures.append(f"{in_force_n} estimates in force for {missing} missing intervals")
        if in_force_sum + actual_sum != register_difference:
            failures.append(
                f"estimates {in_force_sum} + actuals {actual_sum} != register difference {register_difference}"
            )
        if view.get("estimated", (0, 0))[0] != missing:
            failures.append(f"view quality: {view}")
    else:
        if actual_n != expected_intervals:
            failures.append(f"{actual_n} actual intervals, want {expected_intervals}")
        if set(view) != {"actual"}:
            failures.append(f"view still has estimates: {view}")
        if superseded_rows != est_rows or latest_superseded != est_rows or est_rows == 0:
            failures.append(
                f"{est_rows} estimated rows, {superseded_rows} superseded, {latest_superseded} latest superseded"
            )
        if mismatched:
            failures.append(f"{mismatched} superseded rows differ from the readings")
        if actual_sum != register_difference:
            failures.append(f"actuals {actual_sum} != register difference {register_difference}")
    out = {
        "ok": not failures,
        "phase": a.phase,
        "register_difference": register_difference,
        "actual_intervals": actual_n,
        "actual_sum": actual_sum,
        "estimate_rows": est_rows,
        "superseded_rows": superseded_rows,
        "in_force": in_force_n,
        "in_force_sum": in_force_sum,
        "methods": methods,
        "view": {q: {"intervals": n, "sum": s} for q, (n, s) in view.items()},
        "failures": failures,
    }
    print(json.dumps(out))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
