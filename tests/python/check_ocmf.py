"""Independent check of OCMF frames stored by Feeder (issue 14), with pyocmf and DuckDB
only, never Feeder's code.

For every row of the `frames` dataset whose payload is an OCMF string (`OCMF|...`):

- pyocmf parses the string and verifies its ECDSA signature with the public key the
  registry (JSON Lines) holds for (device_id, key_id); the frame's own signature column
  is empty, `PG` is `T<seq>` or `F<seq>`, the meter serial (`MS`, else `GS`) is the
  registered one;
- its `readings` rows (DuckDB, joined on device_id and seq) are exactly the string's
  `RD` entries: the same time (`TM`), OBIS (`RI`), value (`RV` as an exact decimal, kWh
  stored as Wh) and `ocmf_time_<status>` / `ocmf_tx_<TX>` flags, each stored once.

As a guard against a verifier that accepts anything, the first string is also verified
with one byte of its payload changed, which must fail.

Prints one JSON line; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
from pyocmf import OCMF

UNIT_FACTOR = {"kWh": (Decimal(1000), "Wh"), "Wh": (Decimal(1), "Wh")}


def registry_keys(path: Path) -> dict[tuple[str, str], dict]:
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry.get("alg") == "ocmf":
                keys[(entry["device_id"], entry["key_id"])] = entry
    return keys


def check_frame(con, row, keys, problems: list[str]) -> int:
    device_id, seq, key_id, payload, signature = row
    where = f"{device_id} seq {seq}"
    text = bytes(payload).decode("utf-8")
    entry = keys.get((device_id, key_id))
    if entry is None:
        problems.append(f"{where}: no ocmf key {key_id} in the registry")
        return 0
    if signature:
        problems.append(f"{where}: an OCMF frame carries a frame signature")
    ocmf = OCMF.from_string(text)
    if not ocmf.verify_signature(entry["public_key"]):
        problems.append(f"{where}: pyocmf does not verify the signature")
    p = ocmf.payload
    if p.PG not in (f"T{seq}", f"F{seq}"):
        problems.append(f"{where}: PG {p.PG} is not the seq")
    serial = p.MS or p.GS
    if entry.get("serial") and serial != entry["serial"]:
        problems.append(f"{where}: serial {serial} is not the registered {entry['serial']}")
    stored = con.execute(
        "SELECT epoch_ms(ts), obis, value_raw, scaler, unit, flags FROM readings "
        "WHERE device_id = ? AND seq = ? ORDER BY ts, obis",
        [device_id, seq],
    ).fetchall()
    expected = []
    for r in p.RD:
        factor, unit = UNIT_FACTOR[r.RU.value]
        ts_ms = int(r.TM.timestamp.timestamp() * 1000)
        expected.append((ts_ms, str(r.RI), r.RV * factor, unit, r.TM.status.value, r.TX.value if r.TX else None))
    expected.sort(key=lambda e: (e[0], e[1]))
    if len(stored) != len(expected):
        problems.append(f"{where}: {len(stored)} readings rows, the string has {len(expected)}")
        return 0
    for (ts, obis, raw, scaler, unit, flags), (ets, eobis, evalue, eunit, status, tx) in zip(stored, expected):
        value = Decimal(raw).scaleb(scaler)
        if (ts, obis, unit) != (ets, eobis, eunit) or value != evalue:
            problems.append(f"{where}: row {ts} {obis} {value} {unit} is not {ets} {eobis} {evalue} {eunit}")
        wanted = {f"ocmf_time_{status}"} | ({f"ocmf_tx_{tx}"} if tx else set())
        if not wanted <= set(flags):
            problems.append(f"{where}: flags {flags} lack {sorted(wanted)}")
    return len(stored)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--registry", required=True)
    args = ap.parse_args()
    keys = registry_keys(Path(args.registry))
    con = duckdb.connect()
    for ds in ("frames", "readings", "quarantine"):
        glob = f"{args.data}/{ds}/**/*.parquet"
        con.execute(f"CREATE VIEW {ds} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    # a protobuf payload is not UTF-8: the OCMF prefix is checked on the bytes
    rows = [
        r
        for r in con.execute(
            "SELECT device_id, seq, key_id, payload, signature FROM frames ORDER BY device_id, seq"
        ).fetchall()
        if bytes(r[3]).startswith(b"OCMF|")
    ]
    problems: list[str] = []
    readings = sum(check_frame(con, r, keys, problems) for r in rows)
    devices = sorted({r[0] for r in rows})
    doubled = con.execute(
        "SELECT count(*) FROM (SELECT device_id, seq, ts, obis FROM readings "
        "WHERE list_contains(?, device_id) GROUP BY ALL HAVING count(*) > 1)",
        [devices],
    ).fetchone()[0]
    if doubled:
        problems.append(f"{doubled} OCMF readings stored more than once")
    duplicates = con.execute(
        "SELECT count(*) FROM quarantine WHERE reason = 'duplicate' AND list_contains(?, device_id)",
        [devices],
    ).fetchone()[0]
    guard = None
    if rows:
        device_id, _, key_id, payload, _ = rows[0]
        text = bytes(payload).decode("utf-8")
        at = text.index('"RV":') + 5
        tampered = text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :]
        guard = OCMF.from_string(tampered).verify_signature(keys[(device_id, key_id)]["public_key"])
        if guard:
            problems.append("pyocmf verified a tampered string: the check proves nothing")
    if not rows:
        problems.append("no OCMF frame stored")
    print(
        json.dumps(
            {
                "ocmf_frames": len(rows),
                "readings": readings,
                "devices": devices,
                "quarantined_duplicates": duplicates,
                "tampered_verified": guard,
                "problems": problems[:20],
            }
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
