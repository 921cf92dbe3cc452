"""Checks of deploy/: the container image recipe and the Kubernetes manifests.

Why: nothing here can start a cluster or a container engine, so the manifests are held to
everything that can be checked offline, by independent tools where they exist:

- every overlay renders with `kubectl kustomize`;
- built-in kinds validate strictly against the Kubernetes API schemas
  (kubernetes-validate, for the oldest and newest Kubernetes we support); custom
  resources (Strimzi, Prometheus Operator) against the schemas in deploy/schemas/;
- checkov finds nothing, and every check it skips carries its reason;
- hadolint passes the Dockerfile;
- the config each stage mounts is accepted by the real binary
  (`feeder --config F config check <stage>`, with the container's environment), and the
  real edge reloads a registry directory updated the way the kubelet updates a Secret;
- the alert rules parse as PromQL (promql-parser);
- the manifests agree with the code and with each other: probes on the real health
  endpoints, resource limits, the security context, a NetworkPolicy allowing exactly
  the traffic the stage needs, a grace period above the shutdown deadline, KafkaTopics
  for every topic the code names with the configured partitions, alert rules over
  metrics the code emits, and docs/operations.md naming every metric.

The scanners live in their own virtualenv (tests/setup-deploy-tools.sh, run from here).
Each validator is also shown to reject a broken input, so a silent tool cannot pass.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("small", "large")
STAGES = ("edge", "stream", "writer")
NAMESPACE = "feeder"
# The oldest Kubernetes the manifests claim (docs/operations.md) and the newest
# kubernetes-validate knows.
K8S_VERSIONS = ("1.30", "1.37")
# Checks the manifests skip on purpose; each skip's reason is in its annotation.
ALLOWED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35"}
# A stage without a shutdown_deadline flag drains within this bound (asserted by
# services/feeder/tests/{stream,writer}_lifecycle.rs).
DRAIN_BOUND_S = 30
GRACE_MARGIN_S = 10
CRD_SCHEMAS = {
    "KafkaTopic": "kafkatopic.yaml",
    "KafkaUser": "kafkauser.yaml",
    "Kafka": "kafka.yaml",
    "KafkaNodePool": "kafkanodepool.yaml",
    "ServiceMonitor": "servicemonitor.yaml",
    "PrometheusRule": "prometheusrule.yaml",
}


# ---------------------------------------------------------------- tools and inputs


@pytest.fixture(scope="session")
def tools() -> Path:
    """The bin directory of the tools venv: checkov, kubernetes-validate, hadolint, and a
    python with promql_parser."""
    out = subprocess.run(
        [str(REPO / "tests" / "setup-deploy-tools.sh")],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def feeder_bin() -> Path:
    """The debug `feeder` binary (tests/run.sh builds the workspace before pytest)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    exe = target / "debug" / "feeder"
    assert exe.is_file(), f"{exe} missing: build it first (cargo build -p feeder)"
    return exe


@functools.cache
def rendered_text(overlay: str) -> str:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def docs_of(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered_text(overlay)) if d]


def example_docs() -> list[dict]:
    text = (DEPLOY / "examples" / "strimzi-kafka.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


# The edge is a Deployment; the stream and the writer are StatefulSets (stable pod names
# as static consumer-group member ids, docs/operations.md#static-membership).
WORKLOAD_KIND = {"edge": "Deployment", "stream": "StatefulSet", "writer": "StatefulSet"}


def deployment(docs: list[dict], stage: str) -> dict:
    """The stage's workload (Deployment or StatefulSet: the checks below hold for both)."""
    return one(docs, WORKLOAD_KIND[stage], f"feeder-{stage}")


def container(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def stage_config(docs: list[dict], stage: str) -> dict:
    return tomllib.loads(config_text(docs, stage))


def config_text(docs: list[dict], stage: str) -> str:
    dep = deployment(docs, stage)
    vol = volume_for(dep, "/etc/feeder/feeder.toml")
    cm = one(docs, "ConfigMap", vol["configMap"]["name"])
    return cm["data"]["feeder.toml"]


def volume_for(dep: dict, path: str) -> dict:
    """The pod volume mounted at `path` or at a directory containing it."""
    mounts = [
        m for m in container(dep)["volumeMounts"]
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{dep['metadata']['name']}: nothing mounted at {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    return vols[mount["name"]] | {"_mount": mount}


def duration_s(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert m, f"duration {text!r}"
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def selects(selector: dict, labels: dict) -> bool:
    assert "matchExpressions" not in selector, "selectors here use matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_labels(dep: dict) -> dict:
    return dep["spec"]["template"]["metadata"]["labels"]


# ---------------------------------------------------------------- rendering and schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_part(overlay):
    docs = docs_of(overlay)
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace", "ServiceAccount", "Deployment", "StatefulSet", "ConfigMap", "Service",
        "PodDisruptionBudget", "NetworkPolicy", "KafkaTopic", "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    workloads = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
    assert {(d["kind"], d["metadata"]["name"]) for d in workloads} == {
        (WORKLOAD_KIND[s], f"feeder-{s}") for s in STAGES
    }
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, d["metadata"]["name"]
    ns = one(docs, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_base_is_namespace_agnostic():
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "base")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(docs) > 20
    assert not [d["metadata"]["name"] for d in docs if "namespace" in d["metadata"]]
    assert not by_kind(docs, "Namespace")


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_validate_against_kubernetes_schemas(overlay, k8s, tools, tmp_path):
    docs = docs_of(overlay)
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered_text(overlay))
    out = subprocess.run(
        [str(tools / "kubernetes-validate"), "--strict", "-k", k8s, str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    passed = set(re.findall(r"^INFO .* passed for resource (\S+) against", out.stdout, re.M))
    builtin = {
        f"{d['kind'].lower()}/{d['metadata']['name']}" for d in docs if d["kind"] not in CRD_SCHEMAS
    }
    assert builtin and builtin <= passed, builtin - passed
    # Only the custom resources lack a Kubernetes schema; they are checked below.
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", out.stdout))
    assert unknown <= set(CRD_SCHEMAS), unknown


@functools.cache
def schema_registry() -> Registry:
    resources = []
    for p in (DEPLOY / "schemas").glob("*.yaml"):
        doc = yaml.safe_load(p.read_text())
        resources.append((p.name, Resource.from_contents(doc)))
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def validate_custom(doc: dict) -> None:
    name = CRD_SCHEMAS[doc["kind"]]
    schema = schema_registry().get_or_retrieve(name).value.contents
    validator = jsonschema.Draft202012Validator(schema, registry=schema_registry())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
        for e in errors
    )


@pytest.mark.parametrize("source", [*OVERLAYS, "examples/strimzi-kafka.yaml"])
def test_custom_resources_validate_against_crd_schemas(source):
    docs = example_docs() if source.startswith("examples/") else docs_of(source)
    # Custom resources: an API group with a dot that is not one of Kubernetes' own.
    groups = {d["apiVersion"].rpartition("/")[0] for d in docs}
    custom_groups = {g for g in groups if "." in g and not g.endswith(".k8s.io")}
    custom = [d for d in docs if d["apiVersion"].rpartition("/")[0] in custom_groups]
    assert custom
    for doc in custom:
        assert doc["kind"] in CRD_SCHEMAS, f"no schema for {doc['kind']}: add one to deploy/schemas"
        validate_custom(doc)


def test_validators_reject_broken_manifests(tools, tmp_path):
    docs = docs_of("small")
    dep = json.loads(json.dumps(deployment(docs, "edge")))
    container(dep)["imagePulPolicy"] = "Always"  # misspelt field
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dep))
    out = subprocess.run(
        [str(tools / "kubernetes-validate"), "--strict", "-k", K8S_VERSIONS[0], str(bad)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0 and "imagePulPolicy" in out.stdout, out.stdout

    topic = json.loads(json.dumps(by_kind(docs, "KafkaTopic")[0]))
    topic["spec"]["partition"] = topic["spec"].pop("partitions")
    with pytest.raises(AssertionError, match="partition"):
        validate_custom(topic)
    rule = json.loads(json.dumps(by_kind(docs, "PrometheusRule")[0]))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    with pytest.raises(AssertionError, match="15 minutes"):
        validate_custom(rule)


# ---------------------------------------------------------------- scanners


def checkov(tools: Path, path: Path) -> dict:
    out = subprocess.run(
        [str(tools / "checkov"), "-f", str(path), "--framework", "kubernetes", "--quiet",
         "--compact", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=600,
        # Offline: no policy download (--skip-download), no PyPI update check.
        env=os.environ | {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    assert out.stdout.strip(), out.stderr
    report = json.loads(out.stdout)
    assert "results" in report, f"checkov found nothing to check in {path}: {report}"
    return report


# checkov has no policies for the Strimzi kinds, so deploy/examples is not scanned.
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes_with_justified_skips(overlay, tools, tmp_path):
    docs = docs_of(overlay)
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered_text(overlay))
    report = checkov(tools, path)
    failed = report["results"].get("failed_checks", [])
    assert not failed, [(f["check_id"], f["resource"], f["check_name"]) for f in failed]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["passed"] > 100, summary
    # each stage's workload, and the large overlay's scheduled compaction (a CronJob)
    workloads = len(STAGES) + len(by_kind(docs, "CronJob"))
    assert summary["skipped"] == len(ALLOWED_SKIPS) * workloads, summary
    # Every skip is one of the known ones and says why.
    for d in docs:
        for key, value in d["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check in ALLOWED_SKIPS, f"{d['metadata']['name']}: unexpected skip {check}"
                assert len(reason.split()) >= 8, f"{check} on {d['metadata']['name']}: say why"


def test_checkov_rejects_an_insecure_deployment(tools, tmp_path):
    dep = json.loads(json.dumps(deployment(docs_of("small"), "stream")))
    del dep["spec"]["template"]["spec"]["securityContext"]
    del container(dep)["securityContext"]
    path = tmp_path / "insecure.yaml"
    path.write_text(yaml.safe_dump(dep))
    failed = {f["check_id"] for f in checkov(tools, path)["results"]["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28"} <= failed, failed


def test_dockerfile_passes_hadolint(tools, tmp_path):
    dockerfile = DEPLOY / "Dockerfile"
    out = subprocess.run([str(tools / "hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install curl\n")
    out = subprocess.run([str(tools / "hadolint"), str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3007" in out.stdout, out.stdout


def test_dockerfile_builds_a_minimal_non_root_image():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in re.sub(r"\\\n", " ", text).splitlines() if ln and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert froms == ["rust:1.95-bookworm", "gcr.io/distroless/cc-debian12:nonroot"], froms
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    steps = [ln for ln in final if ln.startswith(("RUN", "ADD"))]
    assert not steps, "no build steps in the runtime stage"
    (user,) = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and gid.isdigit(), user
    build = " ".join(ln for ln in lines if "cargo build" in ln)
    for flag in ("--release", "--locked", "-p feeder", "--mount=type=cache"):
        assert flag in build, flag
    assert 'ENTRYPOINT ["/usr/local/bin/feeder"]' in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", "target"} <= set(ignore)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_stage_configs_parse_and_agree(overlay):
    docs = docs_of(overlay)
    kafka = None
    for stage in STAGES:
        cfg = stage_config(docs, stage)
        assert {"log", "metrics", "kafka", stage} <= set(cfg), (stage, set(cfg))
        assert cfg["metrics"]["listen"] == "0.0.0.0:9100"
        assert cfg["log"]["json"] is True
        kafka = kafka or cfg["kafka"]
        assert cfg["kafka"] == kafka, f"[kafka] of {stage} differs from edge's"
        props = cfg["kafka"].get("properties", {})
        assert "sasl.password" not in props, "secrets stay out of ConfigMaps"
    # Stages that follow the registry topic follow the same one, a KafkaTopic here, and
    # take the same provisioning keys.
    topics = {t["spec"]["topicName"] for t in by_kind(docs, "KafkaTopic")}
    followed = {
        (c["registry_topic"], c["provisioning_keys"])
        for c in (stage_config(docs, s)[s] for s in STAGES) if "registry_topic" in c
    }
    assert len(followed) <= 1, followed
    for topic, _ in followed:
        assert topic in topics, topic
    writer = stage_config(docs, "writer")["writer"]
    if writer["storage"] == "local":
        assert "s3_bucket" not in writer and writer["data"]
        claim = volume_for(deployment(docs, "writer"), writer["data"])["persistentVolumeClaim"]
        one(docs, "PersistentVolumeClaim", claim["claimName"])
    else:
        assert writer["storage"] == "s3" and writer["s3_bucket"] and "data" not in writer
        assert not by_kind(docs, "PersistentVolumeClaim")


def container_env(dep: dict) -> dict[str, str]:
    """The container's environment as the kubelet would build it, secrets as placeholders."""
    env: dict[str, str] = {}
    for e in container(dep).get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = f"{dep['metadata']['name']}-0"
        else:
            env[e["name"]] = "placeholder-secret"
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("stage", STAGES)
def test_feeder_accepts_each_stage_config(overlay, stage, feeder_bin, tmp_path):
    docs = docs_of(overlay)
    dep = deployment(docs, stage)
    path = tmp_path / "feeder.toml"
    path.write_text(config_text(docs, stage))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)} | container_env(dep)
    assert env.pop("FEEDER_CONFIG") == "/etc/feeder/feeder.toml"
    assert container(dep)["args"] == [stage]
    out = subprocess.run(
        [str(feeder_bin), "--config", str(path), "config", "check", stage],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The secret from the environment reached the settings and was not printed.
    assert "placeholder-secret" not in out.stdout + out.stderr
    assert "sasl.password" in out.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_files_the_config_names_are_mounted(overlay):
    docs = docs_of(overlay)
    for stage in STAGES:
        cfg, dep = stage_config(docs, stage), deployment(docs, stage)
        env = container_env(dep)
        ca = volume_for(dep, cfg["kafka"]["properties"]["ssl.ca.location"])
        assert ca["secret"]["secretName"] == "feeder-kafka-cluster-ca-cert"
        for key in ("FEEDER_TLS_CERT", "FEEDER_TLS_KEY", "FEEDER_TLS_CLIENT_CA"):
            if key in env:
                assert volume_for(dep, env[key])["secret"]["secretName"] == "feeder-edge-tls"
        vols = dep["spec"]["template"]["spec"]["volumes"]
        secrets = {v["secret"]["secretName"] for v in vols if "secret" in v}
        registry_file = cfg[stage].get("registry")
        if registry_file:
            reg = volume_for(dep, registry_file)
            # Hot reload needs the directory mount: a subPath never sees kubelet's swap.
            assert "subPath" not in reg["_mount"]
            assert reg["secret"]["secretName"] == "feeder-registry"
        else:
            # No registry file: no registry Secret either (a Secret holds ~4,500 lines).
            assert "feeder-registry" not in secrets, stage
        if stage in ("edge", "stream"):
            assert bool(registry_file) != bool(cfg[stage].get("registry_topic")), stage
        if overlay == "large":
            # a fleet no Secret can hold: every stage follows the registry topic
            assert cfg[stage]["registry_topic"] == f"{cfg['kafka']['topic_prefix']}.registry"
        if cfg[stage].get("registry_topic"):
            # Topic records are taken only when signed: the public keys, from a ConfigMap.
            keys = volume_for(dep, cfg[stage]["provisioning_keys"])
            assert "subPath" not in keys["_mount"] and keys["_mount"]["readOnly"] is True
            cm = one(docs, "ConfigMap", keys["configMap"]["name"])
            assert cm["metadata"]["name"].startswith("feeder-provisioning-keys")
            lines = cm["data"][cfg[stage]["provisioning_keys"].rsplit("/", 1)[1]].splitlines()
            assert lines
            for line in lines:
                key = json.loads(line)
                assert set(key) == {"key_id", "public_key"}, "public keys only"
                assert re.fullmatch(r"[0-9a-f]{64}", key["public_key"]), key
        if "encryption_keys" in cfg.get("writer", {}):
            assert "secret" in volume_for(dep, cfg["writer"]["encryption_keys"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_serves_tls_and_large_requires_client_certificates(overlay):
    env = container_env(deployment(docs_of(overlay), "edge"))
    assert {"FEEDER_TLS_CERT", "FEEDER_TLS_KEY"} <= set(env)
    assert ("FEEDER_TLS_CLIENT_CA" in env) == (overlay == "large")


def test_large_overlay_turns_encryption_on(feeder_bin, tmp_path):
    docs = docs_of("large")
    dep = deployment(docs, "writer")
    env = container_env(dep)
    keys = volume_for(dep, env["FEEDER_ENCRYPTION_KEYS"])
    assert keys["secret"]["secretName"] == "feeder-encryption-keys"
    assert "FEEDER_ENCRYPTION_KEYS" not in container_env(deployment(docs_of("small"), "writer"))
    # A binary with the flag must read the key file from that variable.
    helptext = subprocess.run(
        [str(feeder_bin), "writer", "--help"], capture_output=True, text=True
    ).stdout
    if "--encryption-keys" in helptext:
        path = tmp_path / "feeder.toml"
        path.write_text(config_text(docs, "writer"))
        out = subprocess.run(
            [str(feeder_bin), "--config", str(path), "config", "check", "writer"],
            capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)} | env,
        )
        assert out.returncode == 0, out.stderr
        assert env["FEEDER_ENCRYPTION_KEYS"] in out.stdout, out.stdout


# ---------------------------------------------------------------- registry hot reload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, within: float, check):
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def tansu(tmp_path):
    """A Kafka-protocol broker on 127.0.0.1 (tests/install-tansu.sh; tests/run.sh exports
    FEEDER_TANSU)."""
    exe = os.environ.get("FEEDER_TANSU") or subprocess.run(
        [str(REPO / "tests" / "install-tansu.sh")], capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "tansu.log", "w") as log:
        proc = subprocess.Popen(
            [exe, "broker", "--storage-engine", "sqlite://tansu.db", "--listener-url", url,
             "--advertised-listener-url", url],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        def listening():
            assert proc.poll() is None, (tmp_path / "tansu.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for("tansu to listen", 30, listening)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def kubelet_publish(mount: Path, version: str, registry: Path) -> None:
    """Updates `mount` the way the kubelet updates a Secret volume: the files go to a new
    hidden directory, then one rename swaps the `..data` symlink to it; the visible
    `registry.jsonl` is a fixed symlink through `..data`, so its own stat never changes."""
    (mount / f"..{version}").mkdir()
    (mount / f"..{version}" / "registry.jsonl").write_bytes(registry.read_bytes())
    tmp = mount / "..data_tmp"
    tmp.symlink_to(f"..{version}")
    os.replace(tmp, mount / "..data")
    link = mount / "registry.jsonl"
    if not link.is_symlink():
        link.symlink_to("..data/registry.jsonl")
    for old in mount.glob("..v*"):
        if old.name != f"..{version}":
            shutil.rmtree(old)


def registry_devices(metrics_port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^feeder_edge_registry_devices (\d+)", text, re.M)
    return int(m[1]) if m else None


def test_edge_reloads_a_registry_secret_the_kubelet_updates(feeder_bin, tansu, tmp_path):
    """The manifests mount the feeder-registry Secret as a directory so that the edge's
    poll sees the kubelet's atomic `..data` swap (a subPath mount never would)."""
    regs = []
    for meters, vehicles in ((3, 1), (5, 2), (8, 1)):
        reg = tmp_path / f"registry-{meters}.jsonl"
        subprocess.run(
            [str(feeder_bin), "devices", "keygen", "--meters", str(meters), "--vehicles",
             str(vehicles), "--registry", str(reg), "--secrets", str(tmp_path / "keys.jsonl")],
            check=True, capture_output=True, timeout=60,
        )
        regs.append((reg, meters + vehicles))
    mount = tmp_path / "registry"
    mount.mkdir()
    kubelet_publish(mount, "v0", regs[0][0])

    edge_cfg = stage_config(docs_of("small"), "edge")["edge"]
    edge_keys = tmp_path / "edge-keys.jsonl"
    made = subprocess.run([str(feeder_bin), "devices", "edge-key", "--out", str(edge_keys)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    metrics_port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    with open(tmp_path / "edge.log", "w") as log:
        edge = subprocess.Popen(
            [str(feeder_bin), "edge", "--registry", str(mount / "registry.jsonl"),
             "--registry-poll", edge_cfg["registry_poll"], "--brokers", tansu,
             "--topic-prefix", "deploy-reload", "--partitions", "1", "--replication", "1",
             "--listen", f"127.0.0.1:{free_port()}",
             "--edge-keys", str(edge_keys),
             "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        def ready():
            assert edge.poll() is None, (tmp_path / "edge.log").read_text()
            url = f"http://127.0.0.1:{metrics_port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        def shows(devices: int):
            return lambda: registry_devices(metrics_port) == devices

        wait_for("edge ready", 60, ready)
        within = 3 * duration_s(edge_cfg["registry_poll"]) + 2
        # The watcher may start just after /readyz first answers 200, so the first swap
        # is repeated until one is taken...
        for attempt in range(3):
            kubelet_publish(mount, f"v1-{attempt}", regs[1][0])
            try:
                wait_for("the first swap", within, shows(regs[1][1]))
                break
            except AssertionError:
                continue
        else:
            pytest.fail("the edge never reloaded:\n" + (tmp_path / "edge.log").read_text())
        # ...and with the watcher certainly running, the next one is taken within a few polls.
        kubelet_publish(mount, "v2", regs[2][0])
        wait_for("the second swap", within, shows(regs[2][1]))
    finally:
        edge.terminate()
        assert edge.wait(timeout=45) == 0, (tmp_path / "edge.log").read_text()


# ---------------------------------------------------------------- workloads


def deadline_s(cfg: dict, stage: str) -> float:
    """How long the stage may take to drain after SIGTERM."""
    text = cfg.get(stage, {}).get("shutdown_deadline")
    if text is not None:
        return duration_s(text)
    return 30.0 if stage == "edge" else DRAIN_BOUND_S


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("stage", STAGES)
def test_workload_has_probes_limits_security_and_grace(overlay, stage):
    docs = docs_of(overlay)
    dep, cfg = deployment(docs, stage), stage_config(docs, stage)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    port = int(cfg["metrics"]["listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == port
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == port, (probe, get)
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port

    res = c["resources"]
    for kind in ("cpu", "memory"):
        assert res["requests"][kind] and res["limits"][kind], kind

    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged", False) is False
    assert "emptyDir" in volume_for(dep, "/tmp/x")
    assert pod["automountServiceAccountToken"] is False
    sa = one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False

    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= deadline_s(cfg, stage) + GRACE_MARGIN_S, (grace, deadline_s(cfg, stage))


def allowed_traffic(docs: list[dict], labels: dict) -> tuple[bool, set, set]:
    """(default deny applies, ingress ports allowed, egress (peer, port) allowed)."""
    deny, ingress, egress = False, set(), set()
    for np in by_kind(docs, "NetworkPolicy"):
        spec = np["spec"]
        if not selects(spec["podSelector"], labels):
            continue
        if not spec.get("ingress") and not spec.get("egress"):
            deny = deny or set(spec["policyTypes"]) == {"Ingress", "Egress"}
        for rule in spec.get("ingress", []):
            ingress |= {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                key = json.dumps(peer, sort_keys=True)
                egress |= {(key, p["port"]) for p in rule["ports"]}
    return deny, ingress, egress


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("stage", STAGES)
def test_network_policies_allow_only_what_the_stage_needs(overlay, stage):
    docs = docs_of(overlay)
    dep = deployment(docs, stage)
    deny, ingress, egress = allowed_traffic(docs, pod_labels(dep))
    assert deny, "no default-deny policy selects the pods"
    want_in = {(9100, "TCP")} | ({(7443, "TCP")} if stage == "edge" else set())
    assert ingress == want_in
    ports = {port for _, port in egress}
    kafka_port = int(stage_config(docs, stage)["kafka"]["brokers"].rsplit(":", 1)[1])
    assert kafka_port in ports and 53 in ports
    s3 = stage == "writer" and stage_config(docs, "writer")["writer"]["storage"] == "s3"
    assert ports == {9092, 9093, 53} | ({443} if s3 else set()), ports
    for peer, port in egress:
        peer = json.loads(peer)
        if port in (9092, 9093):
            ns = peer["namespaceSelector"]["matchLabels"]
            assert ns == {"kubernetes.io/metadata.name": "kafka"}
        if port == 53:
            assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_autoscaling_and_disruption_budgets(overlay):
    docs = docs_of(overlay)
    partitions = stage_config(docs, "stream")["kafka"]["partitions"]
    stream = deployment(docs, "stream")["spec"]["replicas"]
    assert 1 <= stream <= partitions, "replicas beyond the partition count idle"
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if overlay == "small":
        assert not hpas
        assert all(deployment(docs, s)["spec"]["replicas"] == 1 for s in STAGES)
    else:
        assert stream == partitions
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "feeder-edge",
        }
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployment(docs, "edge")["spec"] or (
            deployment(docs, "edge")["spec"]["replicas"] == hpa["spec"]["minReplicas"]
        )
    writer = deployment(docs, "writer")
    if by_kind(docs, "PersistentVolumeClaim"):
        # A ReadWriteOnce volume: one writer, and the old pod gone before the new one
        # (a StatefulSet never surges), and one shared claim, never a claim per pod: every
        # writer of the group must see the one data root.
        assert writer["spec"]["replicas"] == 1 and writer["kind"] == "StatefulSet"
        assert "volumeClaimTemplates" not in writer["spec"]
    for stage in STAGES:
        pdbs = [p for p in by_kind(docs, "PodDisruptionBudget")
                if selects(p["spec"]["selector"], pod_labels(deployment(docs, stage)))]
        assert len(pdbs) == 1 and pdbs[0]["spec"]["maxUnavailable"] == 1, stage


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_stream_and_writer_are_static_group_members_named_by_their_pods(overlay):
    """KIP-345: each stream and writer pod presents its stable StatefulSet pod name as
    FEEDER_INSTANCE_ID (group.instance.id), so a restarted pod gets its own partitions
    back; the edge joins no group and stays a Deployment."""
    docs = docs_of(overlay)
    assert "FEEDER_INSTANCE_ID" not in container_env(deployment(docs, "edge"))
    for stage in ("stream", "writer"):
        sts = deployment(docs, stage)
        assert sts["kind"] == "StatefulSet", stage
        (env,) = [e for e in container(sts)["env"] if e["name"] == "FEEDER_INSTANCE_ID"]
        assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, env
        spec = sts["spec"]
        # pods are named <statefulset>-<ordinal> within a headless governing Service
        svc = one(docs, "Service", spec["serviceName"])
        assert svc["spec"]["clusterIP"] == "None"
        assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(sts))
        assert spec["podManagementPolicy"] == "Parallel"
        assert spec["updateStrategy"]["type"] == "RollingUpdate"
        assert spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
        # the next pod rolls only after this one had time to rejoin its groups
        assert spec["minReadySeconds"] >= 5
        # the stage itself takes the id: the pod name passes its parser
        cfg = stage_config(docs, stage)
        assert "instance_id" not in cfg[stage], "one id per pod: never in the shared file"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_service_monitor(overlay):
    docs = docs_of(overlay)
    edge = one(docs, "Service", "feeder-edge")
    assert [p["port"] for p in edge["spec"]["ports"]] == [7443], "devices never see /metrics"
    assert selects({"matchLabels": edge["spec"]["selector"]}, pod_labels(deployment(docs, "edge")))
    (sm,) = by_kind(docs, "ServiceMonitor")
    scraped = [
        s for s in by_kind(docs, "Service")
        if selects(sm["spec"]["selector"], s["metadata"]["labels"])
    ]
    for stage in STAGES:
        svc = [s for s in scraped if selects({"matchLabels": s["spec"]["selector"]},
                                              pod_labels(deployment(docs, stage)))]
        assert len(svc) == 1, stage
        assert {p["name"]: p["port"] for p in svc[0]["spec"]["ports"]} == {"metrics": 9100}
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]


# ---------------------------------------------------------------- Kafka


def topic_suffixes_in_code() -> set[str]:
    src = (REPO / "services" / "feeder-kafka" / "src" / "topics.rs").read_text()
    found = set(re.findall(r'format!\("\{prefix\}\.([a-z-]+)"\)', src))
    assert {"raw", "checked", "quarantine", "stream-state", "registry"} <= found, found
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_cover_every_topic_with_the_configured_layout(overlay):
    docs = docs_of(overlay)
    kafka = stage_config(docs, "edge")["kafka"]
    prefix = kafka["topic_prefix"]
    topics = {t["spec"]["topicName"]: t for t in by_kind(docs, "KafkaTopic")}
    assert set(topics) == {f"{prefix}.{s}" for s in topic_suffixes_in_code()}
    for name, t in topics.items():
        single = name.endswith((".cohort-tallies", ".cohort-progress"))
        want = 1 if single else kafka["partitions"]
        assert t["spec"]["partitions"] == want, name
        assert t["spec"]["replicas"] == kafka["replication"], name
        config = t["spec"].get("config", {})
        compact = config.get("cleanup.policy") == "compact"
        assert compact == name.endswith((".stream-state", ".cohort-progress", ".registry")), name
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == "feeder-kafka"
        assert config["min.insync.replicas"] == 2, name
    # The registry: the latest line of every key kept whatever its age, and every change
    # kept a week before compaction may replace it, so the writer's audit sees each one.
    registry = topics[f"{prefix}.registry"]["spec"]["config"]
    assert registry["retention.ms"] == -1
    assert registry["min.compaction.lag.ms"] >= 7 * 24 * 3600 * 1000


def test_example_kafka_matches_what_the_stages_expect():
    ex = example_docs()
    (k,) = by_kind(ex, "Kafka")
    cluster = k["metadata"]["name"]
    docs = docs_of("small")
    cfg = {s: stage_config(docs, s) for s in STAGES}
    host, port = cfg["edge"]["kafka"]["brokers"].rsplit(":", 1)
    assert host == f"{cluster}-kafka-bootstrap.{k['metadata']['namespace']}.svc"
    (listener,) = [li for li in k["spec"]["kafka"]["listeners"] if li["port"] == int(port)]
    props = cfg["edge"]["kafka"]["properties"]
    assert listener["tls"] is (props["security.protocol"] in ("SSL", "SASL_SSL"))
    assert listener["authentication"]["type"] == props["sasl.mechanism"].lower()
    (peer,) = listener["networkPolicyPeers"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    assert selects(peer["podSelector"], pod_labels(deployment(docs, "edge")))
    eo = k["spec"]["entityOperator"]
    assert eo["topicOperator"]["watchedNamespace"] == NAMESPACE
    assert eo["userOperator"]["watchedNamespace"] == NAMESPACE
    assert k["spec"]["kafkaExporter"]
    for pool in by_kind(ex, "KafkaNodePool"):
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert pool["spec"]["replicas"] >= cfg["edge"]["kafka"]["replication"]

    assert not by_kind(ex, "KafkaUser"), "the stages' users live in deploy/k8s/base"


def container_kafka_properties(dep: dict) -> dict:
    """The `FEEDER_KAFKA_PROPERTIES` of a stage's container, as `key=value;...`."""
    (value,) = [e["value"] for e in container(dep)["env"]
                if e["name"] == "FEEDER_KAFKA_PROPERTIES"]
    return dict(kv.split("=", 1) for kv in value.split(";"))


def acl_checker(user: dict):
    acls = user["spec"]["authorization"]["acls"]

    def allowed(rtype: str, name: str) -> set[str]:
        ops = set()
        for a in acls:
            r = a["resource"]
            if r.get("patternType", "literal") == "literal":
                hit = name == r["name"]
            else:
                hit = name.startswith(r["name"])
            if r["type"] == rtype and hit and a.get("type", "allow") == "allow":
                ops |= set(a["operations"])
        return ops

    return allowed


# The registry readers' group ids (`KafkaConfig::reader`: `<client id>-reader`; assigned
# partitions, never joined or committed).
REGISTRY_READER_GROUP = {
    "edge": "edge-registry-reader",
    "stream": "stream-registry-reader",
    "writer": "writer-registry-audit-reader",
    "provisioning": "registry-publish-reader",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_stage_has_its_own_kafka_user_with_least_privilege(overlay):
    docs = docs_of(overlay)
    users = {u["metadata"]["name"]: u for u in by_kind(docs, "KafkaUser")}
    assert set(users) == {f"feeder-{s}" for s in STAGES} | {"feeder-provisioning"}
    cfg = {s: stage_config(docs, s) for s in STAGES}
    prefix = cfg["edge"]["kafka"]["topic_prefix"]
    topics = {t["spec"]["topicName"] for t in by_kind(docs, "KafkaTopic")}
    for stage in STAGES:
        user = users[f"feeder-{stage}"]
        # the stage logs in as its own user, with the password the User Operator writes
        dep = deployment(docs, stage)
        props = container_kafka_properties(dep)
        assert props["sasl.username"] == user["metadata"]["name"]
        assert props["sasl.password"] == "$(KAFKA_SASL_PASSWORD)"
        assert "sasl.username" not in cfg[stage]["kafka"]["properties"]
        refs = [e["valueFrom"]["secretKeyRef"] for e in container(dep)["env"]
                if "secretKeyRef" in e.get("valueFrom", {})]
        assert {"name": user["metadata"]["name"], "key": "password"} in refs
    for name, user in users.items():
        assert user["metadata"]["namespace"] == NAMESPACE
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "feeder-kafka"
        allowed = acl_checker(user)
        for t in topics | {"other.topic"}:
            assert "Create" not in allowed("topic", t), (name, t)
        assert not allowed("topic", "other.topic") and not allowed("cluster", "kafka-cluster")

    edge, stream, writer, provisioning = (
        acl_checker(users[f"feeder-{s}"]) for s in (*STAGES, "provisioning")
    )
    raw, registry = f"{prefix}.raw", f"{prefix}.registry"
    # every stage may read the registry topic (its config may name it), none may write it
    for stage, allowed in (("edge", edge), ("stream", stream), ("writer", writer)):
        assert {"Read", "Describe", "DescribeConfigs"} <= allowed("topic", registry), stage
        assert "Write" not in allowed("topic", registry), stage
        assert {"Read", "Describe"} <= allowed("group", REGISTRY_READER_GROUP[stage]), stage
    # the edge writes only raw and reads only the registry
    assert "Write" in edge("topic", raw)
    for t in topics:
        assert t == registry or "Read" not in edge("topic", t), t
        assert t == raw or "Write" not in edge("topic", t), t
    assert not edge("group", cfg["stream"]["stream"]["group"])
    # the writer can only read
    for t in topics:
        assert "Write" not in writer("topic", t), t
    for t in ("checked", "quarantine", "anomalies"):
        assert {"Read", "Describe"} <= writer("topic", f"{prefix}.{t}"), t
    assert {"Read", "Describe"} <= writer("group", cfg["writer"]["writer"]["group"])
    # the stream reads raw and the registry but forges neither, and reads and writes
    # its outputs
    assert "Read" in stream("topic", raw) and "Write" not in stream("topic", raw)
    for t in topics - {raw, registry}:
        assert {"Read", "Write", "Describe"} <= stream("topic", t), t
    group = cfg["stream"]["stream"]["group"]
    for g in (group, group + "-cohorts", "stream-recovery-reader", "stream-cohorts-reader"):
        assert {"Read", "Describe"} <= stream("group", g), g
    assert not stream("group", cfg["writer"]["writer"]["group"])
    # provisioning (`feeder devices publish|revoke|show`) reads and writes the registry,
    # touches no other topic and no stage's group, and no pod logs in as it
    assert {"Read", "Write", "Describe"} <= provisioning("topic", registry)
    for t in (topics - {registry}) | {"other.topic"}:
        assert not provisioning("topic", t), t
    assert {"Read", "Describe"} <= provisioning("group", REGISTRY_READER_GROUP["provisioning"])
    for g in (cfg["stream"]["stream"]["group"], cfg["writer"]["writer"]["group"],
              *(REGISTRY_READER_GROUP[s] for s in STAGES)):
        assert not provisioning("group", g), g
    for stage in STAGES:
        env = container(deployment(docs, stage))["env"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env
                if "secretKeyRef" in e.get("valueFrom", {})}
        assert "feeder-provisioning" not in refs, stage


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_and_stream_mount_the_edge_keys_and_the_writer_does_not(overlay):
    docs = docs_of(overlay)
    for stage in ("edge", "stream"):
        cfg, dep = stage_config(docs, stage), deployment(docs, stage)
        vol = volume_for(dep, cfg[stage]["edge_keys"])
        assert vol["secret"]["secretName"] == "feeder-edge-keys"
        assert vol["secret"]["defaultMode"] & 0o007 == 0, "not readable by others"
    writer = deployment(docs, "writer")
    names = {v.get("secret", {}).get("secretName") for v in
             writer["spec"]["template"]["spec"]["volumes"]}
    assert "feeder-edge-keys" not in names


# ---------------------------------------------------------------- alerts and docs


def metrics_in_code() -> set[str]:
    names = set()
    for p in (REPO / "services").rglob("*.rs"):
        if "/tests/" in str(p):
            continue
        emitted = r'(?:counter|gauge|histogram)!\(\s*"(feeder_[a-z0-9_]+)"'
        names |= set(re.findall(emitted, p.read_text()))
    assert len(names) > 30, names
    return names


def test_alert_rules_cover_the_issue_and_use_real_metrics():
    (rule,) = by_kind(docs_of("small"), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    exprs = " ".join(r["expr"] for r in alerts.values())
    for needle in (
        "kafka_consumergroup_lag",
        "feeder_edge_frames_refused_total",
        'feeder_stream_rule_findings_total{rule=~"cohort_silence|fleet_silence"}',
        "feeder_writer_last_commit_timestamp_seconds",
        "feeder_edge_broker_reachable",
        "feeder_edge_registry_reload_failures_total",
        "feeder_edge_frames_accepted_total[30m] offset 1d",
        "feeder_stream_partition_commit_age_seconds",
        "feeder_writer_partition_commit_age_seconds",
    ):
        assert needle in exprs, needle
    known = metrics_in_code()
    used = set(re.findall(r"\bfeeder_[a-z0-9_]+", exprs))
    assert used <= known, used - known
    group_re = r'consumergroup=~?"([^"]+)"'
    groups = {g for r in alerts.values() for g in re.findall(group_re, r["expr"])}
    stream_group = stage_config(docs_of("small"), "stream")["stream"]["group"]
    writer_group = stage_config(docs_of("small"), "writer")["writer"]["group"]
    assert any(stream_group in g for g in groups) and any(writer_group in g for g in groups)
    for name, r in alerts.items():
        assert r["labels"]["severity"] in ("warning", "critical"), name
        assert r["annotations"]["summary"], name


PARSE_PROMQL = """
import json, sys
import promql_parser
errors = {}
for name, expr in json.load(sys.stdin).items():
    try:
        promql_parser.parse(expr)
    except ValueError as e:
        errors[name] = str(e)
print(json.dumps(errors))
"""


def promql_errors(tools: Path, exprs: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        [str(tools / "python"), "-c", PARSE_PROMQL], input=json.dumps(exprs),
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_alert_expressions_parse_as_promql(tools):
    (rule,) = by_kind(docs_of("small"), "PrometheusRule")
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert promql_errors(tools, exprs) == {}
    broken = {"unbalanced": "sum(rate(feeder_edge_frames_accepted_total[5m])"}
    assert set(promql_errors(tools, broken)) == {"unbalanced"}


# Metric names a PromQL expression selects, from promql_parser's syntax tree (not a regex:
# a name inside a label value or a string literal is not a selected metric).
PROMQL_METRICS = """
import json, sys
import promql_parser

CHILDREN = ("lhs", "rhs", "expr", "args", "vector_selector", "param")

def names(node, out):
    if type(node).__name__ == "VectorSelector":
        if node.name:
            out.add(node.name)
        for m in node.matchers.matchers:
            if m.name == "__name__":
                out.add(m.value)
        return
    for attr in CHILDREN:
        child = getattr(node, attr, None)
        for c in child if isinstance(child, list) else [child]:
            if type(c).__module__ == "promql_parser":
                names(c, out)

result = {}
for key, expr in json.load(sys.stdin).items():
    try:
        found = set()
        names(promql_parser.parse(expr), found)
        result[key] = {"metrics": sorted(found)}
    except ValueError as e:
        result[key] = {"error": str(e)}
print(json.dumps(result))
"""


def promql_metrics(tools: Path, exprs: dict[str, str]) -> dict[str, dict]:
    out = subprocess.run(
        [str(tools / "python"), "-c", PROMQL_METRICS], input=json.dumps(exprs),
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def emitted(name: str, known: set[str]) -> bool:
    """A series name the code emits: a metric itself or a histogram's series."""
    return name in known or any(
        name == m + suffix for m in known for suffix in ("_bucket", "_sum", "_count")
    )


def dashboard_queries(dashboard: dict) -> dict[str, str]:
    return {
        f"{p['title']} / {t['refId']}": t["expr"]
        for p in dashboard["panels"] for t in p["targets"]
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grafana_dashboard_ships_and_queries_only_emitted_metrics(overlay, tools):
    docs = docs_of(overlay)
    (cm,) = [c for c in by_kind(docs, "ConfigMap")
             if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    # the sidecar loads the file as is; the shipped JSON is the one in the repository
    source = DEPLOY / "k8s" / "base" / "dashboards" / "feeder.json"
    assert cm["data"] == {"feeder.json": source.read_text()}
    dashboard = json.loads(cm["data"]["feeder.json"])
    assert dashboard["uid"] and dashboard["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for panel in ("accepted and refused by code", "ack latency", "consumer lag", "owners",
                  "commit age", "quarantine", "anomal", "cohort"):
        assert panel in titles, panel
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    parsed = promql_metrics(tools, queries)
    errors = {k: v["error"] for k, v in parsed.items() if "error" in v}
    assert not errors, errors
    known = metrics_in_code()
    used = {m for v in parsed.values() for m in v["metrics"]}
    assert {m for m in used if not m.startswith("feeder_")} <= {"up"}, used
    unknown = sorted(m for m in used if m.startswith("feeder_") and not emitted(m, known))
    assert not unknown, f"dashboard queries metrics the code does not emit: {unknown}"
    for needle in ("feeder_edge_ack_latency_seconds_bucket", "feeder_edge_frames_refused_total",
                   "feeder_stream_partition_lag_records", "feeder_writer_partition_commit_age_seconds",
                   "feeder_stream_quarantined_total", "feeder_stream_rule_findings_total"):
        assert needle in used, needle
    # the check sees through to the selectors: a misspelt metric, a broken query
    bad = promql_metrics(tools, {
        "typo": "histogram_quantile(0.9, sum by (le) (rate(feeder_edge_ack_latncy_seconds_bucket[5m])))",
        "label": 'sum(rate(feeder_edge_frames_accepted_total{job="feeder_edge_nothing"}[5m]))',
        "broken": "sum(rate(feeder_edge_frames_accepted_total[5m])",
    })
    assert not emitted(bad["typo"]["metrics"][0], known)
    assert bad["label"]["metrics"] == ["feeder_edge_frames_accepted_total"]
    assert "error" in bad["broken"]


def test_operations_doc_names_every_metric_and_alert():
    doc = (REPO / "docs" / "operations.md").read_text()
    missing = sorted(m for m in metrics_in_code() if m not in doc)
    assert not missing, f"docs/operations.md does not mention {missing}"
    (rule,) = by_kind(docs_of("small"), "PrometheusRule")
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            assert r["alert"] in doc, r["alert"]
    sources = [p.read_text() for p in DEPLOY.rglob("*") if p.is_file()]
    for anchor in set(re.findall(r"docs/operations\.md#([a-z0-9-]+)", "\n".join(sources))):
        heading = re.compile(r"^#+ " + anchor.replace("-", "[- ]") + r"\s*$", re.M | re.I)
        assert heading.search(doc), f"no heading for #{anchor}"
