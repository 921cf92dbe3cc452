"""Self-tests of interop_client.py without the Rust services.

Why: when the end-to-end test runs the interop client against Feeder's edge, a failure
must point at the edge. So the client is shown here to (1) match the contract's test
vector, (2) notice when its own signing is wrong, and (3) drive a small in-process
grpcio server that verifies signatures per shared/protocol.md: it must pass against a
correct server and fail against one that accepts forged frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import interop_client  # noqa: E402
from feeder_proto_gen import load_stubs  # noqa: E402

pb = load_stubs()
SEED = bytes(range(32)).hex()
SECRET = bytes(range(100, 132)).hex()


def test_self_check_matches_contract_vector():
    interop_client.self_check()


def test_self_check_catches_wrong_signing_input(monkeypatch):
    real = interop_client.signing_input
    # A classic mistake: little-endian seq.
    monkeypatch.setattr(
        interop_client, "signing_input",
        lambda d, k, s, p: real(d, k, int.from_bytes(s.to_bytes(8, "big"), "little"), p),
    )
    with pytest.raises(interop_client.ClientError, match="signing input mismatch"):
        interop_client.self_check()


def test_self_check_catches_wrong_hmac(monkeypatch):
    monkeypatch.setattr(interop_client, "sign_hmac_sha256", lambda secret, msg: bytes(32))
    with pytest.raises(interop_client.ClientError, match="HMAC-SHA256 mismatch"):
        interop_client.self_check()


class ContractServer(pb.ingest_pb2_grpc.IngestServicer):
    """A tiny edge: verifies each frame per the contract, acks 0 or 16 per frame.

    With ``forgiving=True`` it accepts any signature, which the client must notice.
    """

    def __init__(self, keys: list[dict], forgiving: bool = False):
        self.keys = {(k["device_id"], k["key_id"]): k for k in keys}
        self.forgiving = forgiving
        self.accepted: list[tuple[str, int, int]] = []  # (device_id, seq, readings)

    def _ack(self, sf):
        ack = pb.ingest_pb2.FrameAck(device_id=sf.device_id, seq=sf.seq)
        key = self.keys.get((sf.device_id, sf.key_id))
        if key is None:
            ack.code, ack.message = 16, "unknown device or key"
            return ack
        msg = interop_client.signing_input(sf.device_id, sf.key_id, sf.seq, sf.payload)
        if not self.forgiving:
            if key["alg"] == "ed25519":
                try:
                    pub = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["seed"])).public_key()
                    pub.verify(sf.signature, msg)
                except InvalidSignature:
                    ack.code, ack.message = 16, "bad signature"
                    return ack
            elif sf.signature != interop_client.sign_hmac_sha256(bytes.fromhex(key["secret"]), msg):
                ack.code, ack.message = 16, "bad signature"
                return ack
        frame = pb.frame_pb2.Frame.FromString(sf.payload)
        registers = [r for r in frame.readings if r.obis == "1-0:1.8.0" and r.unit == pb.frame_pb2.WH]
        if len(frame.readings) != 4 or len(registers) != 1 or frame.sent_at_ms <= 0:
            ack.code, ack.message = 3, "unexpected frame content"
            return ack
        self.accepted.append((sf.device_id, sf.seq, len(frame.readings)))
        return ack

    def Push(self, request, context):
        return pb.ingest_pb2.PushResponse(acks=[self._ack(f) for f in request.frames])

    def PushStream(self, request_iterator, context):
        for request in request_iterator:
            yield pb.ingest_pb2.PushResponse(acks=[self._ack(f) for f in request.frames])


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, list[dict]]:
    keys = [
        {"device_id": "mtr-000001", "key_id": "k1", "alg": "ed25519", "seed": SEED, "kind": "meter",
         "labels": {"region": "north", "module": "bg95", "firmware": "4.2.1"}},
        {"device_id": "veh-000042", "key_id": "k1", "alg": "hmac-sha256", "secret": SECRET,
         "kind": "vehicle", "labels": {}},
    ]
    path = tmp_path / "devices.keys.jsonl"
    path.write_text("".join(json.dumps(k) + "\n" for k in keys))
    return path, keys


def serve(servicer) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb.ingest_pb2_grpc.add_IngestServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def run_client(port: int, keys: Path, device: str, seq: int) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, HERE / "interop_client.py", "--target", f"127.0.0.1:{port}",
         "--keys", keys, "--device", device, "--seq", str(seq)],
        capture_output=True, text=True, timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@pytest.mark.parametrize("device", ["mtr-000001", "veh-000042"])
def test_client_against_contract_server(key_file, device):
    path, keys = key_file
    servicer = ContractServer(keys)
    server, port = serve(servicer)
    try:
        rc, out, err = run_client(port, path, device, 41)
    finally:
        server.stop(None)
    assert rc == 0, (out, err)
    assert out["ok"] is True and out["self_check"] == "passed"
    assert [(r["case"], r["seq"], r["code"]) for r in out["results"]] == [
        ("push", 41, 0), ("push_bad_sig", 42, 16), ("push_stream", 43, 0),
    ]
    assert servicer.accepted == [(device, 41, 4), (device, 43, 4)]


def test_client_fails_against_server_accepting_forgeries(key_file):
    path, keys = key_file
    server, port = serve(ContractServer(keys, forgiving=True))
    try:
        rc, out, err = run_client(port, path, "mtr-000001", 1)
    finally:
        server.stop(None)
    assert rc == 1 and out["ok"] is False
    bad = [r for r in out["results"] if not r["ok"]]
    assert [(r["case"], r["code"]) for r in bad] == [("push_bad_sig", 0)]
    assert "expected code 16, got 0" in bad[0]["failure"]
    assert "FAIL push_bad_sig" in err


def test_client_reports_unreachable_server(key_file):
    path, _ = key_file
    rc, out, _ = run_client(1, path, "mtr-000001", 1)
    assert rc == 1 and out["ok"] is False
    assert all(r["code"] == grpc.StatusCode.UNAVAILABLE.value[0] for r in out["results"])


def test_client_reports_unknown_device(key_file):
    path, _ = key_file
    rc, out, err = run_client(1, path, "mtr-999999", 1)
    assert rc == 1 and out["ok"] is False and out["results"] == []
    assert "device 'mtr-999999' not found" in out["error"] and "not found" in err


def test_key_file_validation(tmp_path):
    p = tmp_path / "k.jsonl"
    p.write_text('{"device_id":"d1","key_id":"k1","alg":"ed25519","seed":"00"}\n')
    with pytest.raises(interop_client.ClientError, match=r"k.jsonl:1: Ed25519 seed must be 32 bytes"):
        interop_client.load_device_key(p, "d1")
    p.write_text('\n{"device_id":"d1","key_id":"k1","alg":"rsa"}\n')
    with pytest.raises(interop_client.ClientError, match=r"k.jsonl:2: alg must be one of"):
        interop_client.load_device_key(p, "d1")
    # Rotation: two keys for one device; the last listed is used unless --key-id says otherwise.
    p.write_text(
        json.dumps({"device_id": "d1", "key_id": "k1", "alg": "hmac-sha256", "secret": "11" * 16}) + "\n"
        + json.dumps({"device_id": "d1", "key_id": "k2", "alg": "ed25519", "seed": SEED}) + "\n"
    )
    assert interop_client.load_device_key(p, "d1").key_id == "k2"
    assert interop_client.load_device_key(p, "d1", "k1").alg == "hmac-sha256"
