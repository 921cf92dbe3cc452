#!/usr/bin/env python3
"""Independent check of Feeder's encrypted datasets (Parquet modular encryption).

Why: encryption at rest is only useful if the files are unreadable without the utility's
keys and readable *with* them by the analysts' standard tools, not only by Feeder. This
checker judges the writer's output with pyarrow and DuckDB alone:

* every file of an encrypted dataset has the encrypted-footer magic ``PARE``;
* without keys, pyarrow (``pq.ParquetFile``) and DuckDB (``read_parquet``) both refuse
  every such file;
* with keys, through ``pyarrow.parquet.encryption.CryptoFactory`` and the ``KmsClient``
  of ``docs/datasets.md`` ("Encrypted datasets"), whose code block is executed here
  verbatim (so the documented snippet is tested): the whole dataset directory reads, and
  so does every file on its own;
* what pyarrow decrypted is written as plaintext Parquet into a mirror tree (plaintext
  datasets are copied as they are), and ``check_datasets.py`` runs on the mirror with
  the test's expectations: every acked frame's rows exactly once, contract types, value
  rules. The caller can also run ``feeder verify`` on the mirror: it re-checks every
  decrypted value against the signed frames.

Usage::

    check_encrypted.py --data ROOT --keys KEYS.toml --out MIRROR [--expect EXPECT.json]

The encrypted datasets are the ``[datasets.*]`` tables of the key file. Prints one JSON
object on stdout (``{"ok": ..., "failures": [...], "refused_without_keys": {...},
"rows_with_keys": {...}, "check": {...}}``) and exits 0 iff ok.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "datasets.md"
DATASETS = ("readings", "telematics", "events", "anomalies", "quarantine", "frames")
# The fence of the documented snippet: ```python encrypted (the plain ```python blocks
# run against an unencrypted sample in test_docs_examples.py).
SNIPPET_RE = re.compile(r"^```python encrypted\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def doc_snippet() -> str:
    found = SNIPPET_RE.findall(DOC.read_text(encoding="utf-8"))
    if len(found) != 1:
        raise SystemExit(f"{DOC}: want exactly one ```python encrypted block, found {len(found)}")
    return found[0]


def run_snippet(root: Path, keys: Path) -> dict[str, Any]:
    """Executes the documented snippet where `data/` is `root` and `feeder-keys.toml` is
    `keys`; returns its globals (it defines `decryption` and `table`)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(root.resolve(), Path(tmp) / "data")
        os.symlink(keys.resolve(), Path(tmp) / "feeder-keys.toml")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            scope: dict[str, Any] = {"__name__": "__doc_example__"}
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(doc_snippet(), f"{DOC.name}[python encrypted]", "exec"), scope)
            return scope
        finally:
            os.chdir(cwd)


def files_of(root: Path, dataset: str) -> list[Path]:
    return sorted(p for p in (root / dataset).glob("date=*/*.parquet") if not p.name.startswith("."))


def check(root: Path, keys: Path, out: Path, expect: Path | None) -> dict[str, Any]:
    failures: list[str] = []
    key_file = tomllib.loads(keys.read_text(encoding="utf-8"))
    encrypted = sorted(key_file.get("datasets", {}))
    refused = {"pyarrow": 0, "duckdb": 0}
    rows_with_keys: dict[str, int] = {}
    files_checked = 0

    scope = run_snippet(root, keys)
    decryption = scope["decryption"]
    snippet_rows = scope["table"].num_rows

    con = duckdb.connect(":memory:")
    if out.exists():
        shutil.rmtree(out)
    for dataset in DATASETS:
        files = files_of(root, dataset)
        if dataset not in encrypted:
            if (root / dataset).is_dir():
                shutil.copytree(root / dataset, out / dataset)
            for f in files[:1]:
                try:
                    pq.ParquetFile(f).metadata
                except Exception as e:  # noqa: BLE001 - any failure is a finding
                    failures.append(f"plaintext {dataset} file {f.name} unreadable without keys: {_one_line(e)}")
            continue
        if not files:
            failures.append(f"encrypted dataset {dataset} has no files")
            continue
        total = 0
        for f in files:
            files_checked += 1
            with f.open("rb") as fh:
                fh.seek(-4, os.SEEK_END)
                magic = fh.read()
            if magic != b"PARE":
                failures.append(f"{dataset}/{f.parent.name}/{f.name}: footer magic {magic!r}, want b'PARE'")
            try:
                pq.ParquetFile(f).read()
                failures.append(f"pyarrow read {dataset}/{f.name} without keys")
            except Exception:  # noqa: BLE001 - refusing is the expected outcome
                refused["pyarrow"] += 1
            try:
                con.execute("SELECT count(*) FROM read_parquet(?)", [str(f)]).fetchall()
                failures.append(f"duckdb read {dataset}/{f.name} without keys")
            except duckdb.Error:
                refused["duckdb"] += 1
            try:
                table = pq.ParquetFile(f, decryption_properties=decryption).read()
            except Exception as e:  # noqa: BLE001
                failures.append(f"pyarrow with keys cannot read {dataset}/{f.name}: {_one_line(e)}")
                continue
            total += table.num_rows
            dest = out / dataset / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, dest, compression="zstd")
        rows_with_keys[dataset] = total
        try:
            whole = pq.read_table(root / dataset, decryption_properties=decryption)
            if whole.num_rows != total:
                failures.append(f"{dataset}: directory read gives {whole.num_rows} rows, files {total}")
        except Exception as e:  # noqa: BLE001
            failures.append(f"pyarrow with keys cannot read the {dataset} directory: {_one_line(e)}")
    if "readings" in encrypted and snippet_rows != rows_with_keys.get("readings"):
        failures.append(f"documented snippet read {snippet_rows} readings, files hold {rows_with_keys.get('readings')}")

    cmd = [sys.executable, str(HERE / "check_datasets.py"), "--data", str(out)]
    if expect is not None:
        cmd += ["--expect", str(expect)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        mirror_check = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        mirror_check = {"ok": False, "failures": [f"check_datasets.py printed no JSON: {proc.stderr[-500:]}"]}
    if not mirror_check.get("ok"):
        failures += [f"[decrypted] {m}" for m in mirror_check.get("failures", [])] or ["[decrypted] check failed"]
    if files_checked == 0:
        failures.append("no encrypted file found: nothing was checked")
    return {
        "ok": not failures,
        "failures": failures,
        "encrypted_datasets": encrypted,
        "encrypted_files": files_checked,
        "refused_without_keys": refused,
        "rows_with_keys": rows_with_keys,
        "snippet_rows": snippet_rows,
        "check": mirror_check,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="dataset root written with encryption")
    p.add_argument("--keys", required=True, type=Path, help="the writer's key file (TOML)")
    p.add_argument("--out", required=True, type=Path, help="where to write the decrypted mirror")
    p.add_argument("--expect", type=Path, help="expectation file for check_datasets.py")
    a = p.parse_args(argv)
    result = check(a.data, a.keys, a.out, a.expect)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
