"""Self-tests of check_chaos.py on small synthetic datasets.

Why: the chaos test's verdict is this checker's, so it must pass a correct run and
catch each way a run can go wrong (an acked reading lost or stored twice, a frame
stored twice, a refused frame stored), while letting an unacked frame be stored once (a
killed edge loses the ack, not the frame). Only the key columns the checker reads are
written; the full schemas are check_datasets.py's business.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import check_chaos  # noqa: E402

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def write(root: Path, dataset: str, rows: list[dict], name: str = "t+0+0+9.parquet") -> None:
    d = root / dataset / "date=2024-05-01"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), d / name)


def readings(device: str, seq: int, n: int) -> list[dict]:
    return [
        {"device_id": device, "seq": seq, "ts": T0.replace(minute=i), "obis": "1-0:1.8.0"}
        for i in range(n)
    ]


def frame(device: str, seq: int) -> dict:
    return {"device_id": device, "seq": seq}


def run(tmp: Path, reading_rows, frame_rows, acked, refused=()) -> dict:
    data = tmp / "data"
    write(data, "readings", reading_rows)
    write(data, "frames", frame_rows)
    (tmp / "acked.csv").write_text(
        "device_id,seq,readings,samples,events\n"
        + "".join(f"{d},{s},{r},0,0\n" for d, s, r in acked)
    )
    (tmp / "refused.csv").write_text(
        "device_id,seq\n" + "".join(f"{d},{s}\n" for d, s in refused)
    )
    return check_chaos.check(data, tmp / "acked.csv", tmp / "refused.csv")


GOOD_READINGS = readings("m1", 1, 3) + readings("m1", 2, 2)
GOOD_FRAMES = [frame("m1", 1), frame("m1", 2)]
ACKED = [("m1", 1, 3), ("m1", 2, 2)]


def test_a_correct_run_passes(tmp_path):
    r = run(tmp_path, GOOD_READINGS, GOOD_FRAMES, ACKED, refused=[("m1", 1 << 40), ("ghost", 1)])
    assert r["ok"], r["failures"]
    assert (r["acked_frames"], r["acked_readings"], r["stored_readings"]) == (2, 5, 5)
    assert (r["stored_telematics"], r["refused_frames"]) == (0, 2)


def test_an_acked_reading_lost_fails(tmp_path):
    r = run(tmp_path, GOOD_READINGS[:-1], GOOD_FRAMES, ACKED)
    assert not r["ok"]
    assert r["acked_frames_wrong_readings"] == 1
    assert "1 short" in r["failures"][0]


def test_a_reading_stored_twice_fails(tmp_path):
    r = run(tmp_path, GOOD_READINGS + GOOD_READINGS[:1], GOOD_FRAMES, ACKED)
    assert not r["ok"]
    assert any("exactly-once query" in f for f in r["failures"])


def test_a_frame_stored_twice_fails_acked_or_not(tmp_path):
    r = run(tmp_path, GOOD_READINGS, GOOD_FRAMES + [frame("m1", 2)], ACKED)
    assert not r["ok"]
    r = run(tmp_path, GOOD_READINGS, GOOD_FRAMES + [frame("m1", 3)] * 2, ACKED)
    assert any("stored more than once" in f for f in r["failures"])


def test_an_unacked_frame_stored_once_is_counted_not_failed(tmp_path):
    r = run(tmp_path, GOOD_READINGS + readings("m1", 3, 1), GOOD_FRAMES + [frame("m1", 3)], ACKED)
    assert r["ok"], r["failures"]
    assert r["stored_unacked_frames"] == 1


def test_a_refused_frame_stored_fails(tmp_path):
    r = run(tmp_path, GOOD_READINGS, GOOD_FRAMES, ACKED, refused=[("m1", 2)])
    assert not r["ok"]
    assert any("frames the edge refused are stored" in f for f in r["failures"])
