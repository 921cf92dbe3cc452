"""The scheduled compaction of the large overlay (deploy/k8s/overlays/large/
cronjob-compact.yaml): a daily CronJob running `feeder compact` on the writers' bucket.

Why these checks: a compaction that reads another bucket than the writers' finds
nothing and reports success every night, so the `[compact]` storage keys must be the
`[writer]` ones; the real binary must accept the config with the pod's environment; the
pod must get the Secrets the writers use (S3 credentials, the Kafka password, the Parquet
encryption keys) and a way out to the object store; and one run at a time.
(test_deploy.py's scanners, kubernetes-validate and checkov, cover the CronJob with the
rest of the overlay.)
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LARGE = REPO / "deploy" / "k8s" / "overlays" / "large"
STORAGE_KEYS = ("storage", "s3_bucket", "s3_endpoint", "s3_prefix", "s3_region", "data")


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(LARGE)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def pod(cron: dict) -> dict:
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def config(docs: list[dict], spec: dict) -> str:
    vols = {v["name"]: v for v in spec["volumes"]}
    (c,) = spec["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/feeder/feeder.toml"]
    cm = find(docs, "ConfigMap", vols[mount["name"]]["configMap"]["name"])
    return cm["data"][mount["subPath"]]


def test_compaction_runs_daily_once_at_a_time_on_the_writers_bucket(docs):
    cron = find(docs, "CronJob", "feeder-compact")
    assert cron["metadata"]["namespace"] == "feeder"
    spec = cron["spec"]
    assert re.fullmatch(r"\d+ \d+ \* \* \*", spec["schedule"]), "daily"
    assert spec["timeZone"] == "Etc/UTC", "closed dates are UTC dates"
    assert spec["concurrencyPolicy"] == "Forbid", "one compactor per date directory"
    p = pod(cron)
    assert p["restartPolicy"] == "Never" and p["automountServiceAccountToken"] is False
    (c,) = p["containers"]
    assert c["args"] == ["compact"]
    writer = find(docs, "StatefulSet", "feeder-writer")
    (w,) = writer["spec"]["template"]["spec"]["containers"]
    assert c["image"] == w["image"]

    text = config(docs, p)
    assert text == config(docs, writer["spec"]["template"]["spec"]), "the writers' file"
    cfg = tomllib.loads(text)
    compact, written = cfg["compact"], cfg["writer"]
    assert {k: compact.get(k) for k in STORAGE_KEYS} == {
        k: written.get(k) for k in STORAGE_KEYS
    }, "[compact] must read the bucket [writer] writes"
    assert compact["group"] == written["group"], "offsets of the writers' group"
    assert compact["dataset"] == "all" and compact["closed_days"] >= 2


def test_compaction_gets_the_writers_secrets_and_a_way_to_the_bucket(docs):
    cron = find(docs, "CronJob", "feeder-compact")
    p = pod(cron)
    (c,) = p["containers"]
    env = {e["name"]: e for e in c["env"]}
    refs = {
        name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for name, e in env.items() if "valueFrom" in e
    }
    assert refs == {
        "AWS_ACCESS_KEY_ID": ("feeder-s3", "access_key_id"),
        "AWS_SECRET_ACCESS_KEY": ("feeder-s3", "secret_access_key"),
        "KAFKA_SASL_PASSWORD": ("feeder-writer", "password"),
    }
    assert "sasl.username=feeder-writer" in env["FEEDER_KAFKA_PROPERTIES"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in p["volumes"]}
    keys = env["FEEDER_ENCRYPTION_KEYS"]["value"]
    assert vols[mounts[os.path.dirname(keys)]]["secret"]["secretName"] == "feeder-encryption-keys"
    ca = tomllib.loads(config(docs, p))["kafka"]["properties"]["ssl.ca.location"]
    assert vols[mounts[os.path.dirname(ca)]]["secret"]["secretName"] == (
        "feeder-kafka-cluster-ca-cert"
    )
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["memory"]

    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    egress = [
        rule
        for np in docs if np["kind"] == "NetworkPolicy"
        if np["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
        for rule in np["spec"].get("egress", [])
    ]
    ports = {p["port"] for rule in egress for p in rule.get("ports", [])}
    assert {443, 9093, 53} <= ports, ports


def test_feeder_accepts_the_compaction_config(docs, tmp_path):
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    exe = (target if target.is_absolute() else REPO / target) / "debug" / "feeder"
    assert exe.is_file(), f"{exe} missing: build it first (cargo build -p feeder)"
    p = pod(find(docs, "CronJob", "feeder-compact"))
    path = tmp_path / "feeder.toml"
    path.write_text(config(docs, p))
    (c,) = p["containers"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for e in c["env"]:
        value = e.get("value", "placeholder-secret")
        env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
    out = subprocess.run(
        [str(exe), "--config", str(path), "config", "check", *c["args"]],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "placeholder-secret" not in out.stdout + out.stderr
    assert "closed_days: Some(" in out.stdout and 'dataset: "all"' in out.stdout
    assert 'bucket: "feeder-datasets"' in out.stdout or "s3_bucket" in out.stdout
