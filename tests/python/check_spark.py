#!/usr/bin/env python3
"""Apache Spark reads Feeder's datasets: the analysts' contract checked by a JVM reader.

Why: shared/datasets.md promises datasets readable by DuckDB, pyarrow, Spark and Trino.
check_datasets.py judges the files with DuckDB and pyarrow (both C++ Parquet readers);
Spark reads Parquet with parquet-mr (Java), a separate implementation of the format,
of Hive-style ``date=`` partition discovery, and of Parquet modular encryption. This
script runs Spark (pyspark, local mode, the JVM from the machine) over a data root and
checks, with Spark SQL only:

* every dataset directory present loads, with the column types Spark gives the
  contract's types (uint64 as decimal(20,0), timestamps as timestamp, ``date`` from the
  directory names as date);
* per acked frame (device_id, seq): exactly R ``readings`` rows, S ``telematics``, E
  ``events`` and one ``frames`` row; the contract's exactly-once query is empty; no row
  for an ``absent`` frame; ``date`` is the UTC date of ``ts``;
* with ``--keys`` (Feeder's encryption key file): first, without keys, Spark refuses
  every dataset the key file encrypts; then, with parquet-mr's own
  ``PropertiesDrivenCryptoFactory`` and a 30-line ``KmsClient`` that hands the master
  keys to parquet-mr's ``KeyToolkit.decryptKeyLocally`` (``spark/FeederKeyListKms.java``,
  compiled here with javac against Spark's jars), every check above passes. That shows
  the key material Feeder writes (PKMT1, data keys wrapped locally with AES-GCM) is the
  format parquet-mr's key tools read, and that parquet-mr decrypts the files.

Usage::

    check_spark.py --data ROOT --expect EXPECT.json [--keys feeder-keys.toml]

EXPECT.json is check_datasets.py's. Prints one JSON object on stdout (``ok``, ``spark``,
``rows``, ``types``, ``failures``, and with --keys ``encrypted`` and
``refused_without_keys``) and exits 0 iff ok.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

DATASETS = ["readings", "telematics", "events", "frames", "quarantine", "anomalies"]

# Spark's types for the contract's columns (shared/datasets.md).
TYPES = {
    "readings": {"device_id": "string", "seq": "decimal(20,0)", "ts": "timestamp",
                 "obis": "string", "value": "double", "value_raw": "bigint",
                 "flags": "array<string>", "received_at": "timestamp", "date": "date"},
    "telematics": {"device_id": "string", "seq": "decimal(20,0)", "ts": "timestamp",
                   "lat": "double", "odometer_m": "decimal(20,0)", "ignition": "boolean",
                   "received_at": "timestamp", "date": "date"},
    "events": {"device_id": "string", "seq": "decimal(20,0)", "ts": "timestamp",
               "kind": "string", "received_at": "timestamp", "date": "date"},
    "frames": {"device_id": "string", "seq": "decimal(20,0)", "key_id": "string",
               "received_at": "timestamp", "payload": "binary", "signature": "binary",
               "date": "date"},
    "quarantine": {"device_id": "string", "reason": "string", "raw": "binary",
                   "date": "date"},
    "anomalies": {"detected_at": "timestamp", "device_id": "string", "cohort": "string",
                  "rule": "string", "severity": "string", "date": "date"},
}

# Rows per acked frame, by dataset: the EXPECT.json field that gives the count.
PER_FRAME = {"readings": "readings", "telematics": "samples", "events": "events"}


def master_keys(path: Path) -> dict[str, bytes]:
    """The [master_keys] of a Feeder key file: hex digits, or base64 (``base64:``
    optional); ``env:NAME`` reads the value from environment variable NAME."""
    with path.open("rb") as f:
        doc = tomllib.load(f)
    out = {}
    for name, v in doc.get("master_keys", {}).items():
        if v.startswith("env:"):
            v = os.environ[v.removeprefix("env:")]
        v = v.strip()
        try:
            out[name] = bytes.fromhex(v)
        except ValueError:
            out[name] = base64.b64decode(v.removeprefix("base64:"))
    return out


def encrypted_datasets(path: Path) -> list[str]:
    with path.open("rb") as f:
        return sorted(tomllib.load(f).get("datasets", {}))


KMS_SOURCE = Path(__file__).parent / "spark" / "FeederKeyListKms.java"
KMS_CLASS = "org.feeder.FeederKeyListKms"


def build_kms_jar(workdir: Path) -> Path:
    """Compiles the KmsClient against the parquet-mr and Hadoop jars Spark ships."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    classes = workdir / "classes"
    classes.mkdir()
    cp = os.pathsep.join(glob.glob(str(jars / "*.jar")))
    for cmd in (
        ["javac", "-cp", cp, "-d", str(classes), str(KMS_SOURCE)],
        ["jar", "cf", str(workdir / "feeder-kms.jar"), "-C", str(classes), "org"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")
    return workdir / "feeder-kms.jar"


def spark_session(extra_jar: Path | None = None):
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    if extra_jar is not None:
        builder = builder.config("spark.driver.extraClassPath", str(extra_jar))
    spark = (
        builder.master("local[2]")
        .appName("feeder-check-spark")
        .config("spark.ui.enabled", "false")
        # tests talk only to 127.0.0.1: the driver's RPC and block manager bind there
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def hadoop_conf(spark):
    return spark.sparkContext._jsc.hadoopConfiguration()


def use_keys(spark, keys: dict[str, bytes] | None) -> None:
    """parquet-mr's own crypto factory and in-memory KMS, or no decryption at all."""
    conf = hadoop_conf(spark)
    if keys is None:
        conf.unset("parquet.crypto.factory.class")
        conf.unset("parquet.encryption.kms.client.class")
        conf.unset("parquet.encryption.key.list")
        return
    conf.set("parquet.crypto.factory.class",
             "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory")
    conf.set("parquet.encryption.kms.client.class", KMS_CLASS)
    conf.set("parquet.encryption.key.list", ", ".join(
        f"{name}: {base64.b64encode(k).decode()}" for name, k in keys.items()))


def root_cause(e: Exception) -> str:
    """The innermost Java cause of a Spark failure, else the Python message."""
    jexc = getattr(e, "java_exception", None)
    if jexc is None:
        return str(e).splitlines()[0][:300]
    while jexc.getCause() is not None:
        jexc = jexc.getCause()
    return f"{jexc.getClass().getName()}: {jexc.getMessage()}"[:300]


def load(spark, root: Path, dataset: str):
    # Spark skips files whose names start with "." or "_" (a writer's temp files).
    return spark.read.option("basePath", str(root / dataset)).parquet(str(root / dataset))


def check(spark, root: Path, expect: dict | None, out: dict) -> None:
    failures = out["failures"]
    frames_seen = {}
    for ds in DATASETS:
        if not (root / ds).is_dir():
            out["rows"][ds] = 0
            continue
        df = load(spark, root, ds)
        df.createOrReplaceTempView(ds)
        out["rows"][ds] = df.count()
        types = dict(df.dtypes)
        out["types"][ds] = types
        for col, want in TYPES[ds].items():
            if types.get(col) != want:
                failures.append(f"{ds}.{col}: Spark type {types.get(col)}, expected {want}")
        if "ts" in types:
            bad = spark.sql(f"SELECT count(*) FROM {ds} WHERE date <> to_date(ts)").first()[0]
            if bad:
                failures.append(f"{ds}: {bad} rows whose date= is not the UTC date of ts")
        if ds in PER_FRAME or ds == "frames":
            frames_seen[ds] = {
                (r[0], int(r[1])): r[2]
                for r in spark.sql(
                    f"SELECT device_id, seq, count(*) FROM {ds} GROUP BY device_id, seq"
                ).collect()
            }
    if "readings" in frames_seen:
        dup = spark.sql(
            "SELECT device_id, seq, ts, obis, count(*) AS n FROM readings "
            "GROUP BY device_id, seq, ts, obis HAVING count(*) > 1"
        ).count()
        if dup:
            failures.append(f"readings: {dup} (device_id, seq, ts, obis) stored more than once")
    if expect is None:
        return
    for ds, field in list(PER_FRAME.items()) + [("frames", None)]:
        seen = frames_seen.get(ds, {})
        wrong = 0
        for a in expect.get("acked", []):
            want = 1 if field is None else a.get(field, 0)
            if seen.get((a["device_id"], a["seq"]), 0) != want:
                wrong += 1
        if wrong:
            failures.append(f"{ds}: {wrong} acked frames without exactly their rows")
        total = sum(1 if field is None else a.get(field, 0) for a in expect.get("acked", []))
        if field is not None and out["rows"].get(ds, 0) != total:
            failures.append(f"{ds}: {out['rows'].get(ds, 0)} rows, the devices sent {total}")
        for a in expect.get("absent", []):
            if (a["device_id"], a["seq"]) in seen:
                failures.append(f"{ds}: rows for absent frame {a['device_id']}/{a['seq']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--expect", type=Path)
    ap.add_argument("--keys", type=Path, help="Feeder encryption key file (TOML)")
    args = ap.parse_args()
    expect = json.loads(args.expect.read_text()) if args.expect else None
    out: dict = {"ok": False, "rows": {}, "types": {}, "failures": []}
    needs = ["java"] + (["javac", "jar"] if args.keys else [])
    missing = [t for t in needs if shutil.which(t) is None]
    if missing:
        out["failures"].append(f"not on PATH: {missing} (a JDK 17+; tests/setup-python.sh)")
        print(json.dumps(out))
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="feeder-spark-"))
    spark = spark_session(build_kms_jar(workdir) if args.keys else None)
    out["spark"] = spark.version
    try:
        if args.keys:
            encrypted = [d for d in encrypted_datasets(args.keys) if (args.data / d).is_dir()]
            out["encrypted"] = encrypted
            refused = []
            use_keys(spark, None)
            for ds in encrypted:
                try:
                    load(spark, args.data, ds).count()
                except Exception as e:  # noqa: BLE001 - judged by its root cause below
                    cause = root_cause(e)
                    out.setdefault("refusals", {})[ds] = cause
                    # refused for being encrypted, not for some other fault
                    if "encrypt" in cause.lower() or "crypto" in cause.lower():
                        refused.append(ds)
            out["refused_without_keys"] = refused
            if refused != encrypted:
                out["failures"].append(
                    f"Spark read {sorted(set(encrypted) - set(refused))} without keys")
            use_keys(spark, master_keys(args.keys))
        check(spark, args.data, expect, out)
    except Exception as e:  # noqa: BLE001 - reported as a failure, with its root cause
        out["failures"].append(f"Spark could not read the datasets: {root_cause(e)}")
    finally:
        spark.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out["ok"] = not out["failures"]
    print(json.dumps(out, default=str))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
