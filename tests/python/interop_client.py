#!/usr/bin/env python3
"""Interop client: plays one device against a Feeder edge with stock grpcio + PyCA.

Why: third parties implement the device protocol (shared/protocol.md) in their own
firmware and head-end software, not with Feeder's Rust code. This client is such an
independent implementation: its stubs are generated from ``proto/`` by protoc
(``feeder_proto_gen``), it signs with PyCA ``cryptography``, and it talks to the edge
with grpcio. If the edge accepts its frames and rejects a forged one, the Rust side
implements the written contract rather than just agreeing with itself.

Before touching the network it checks its own signing against the contract's test
vector (signing input, Ed25519 signature, HMAC tag) and fails loudly on a mismatch,
so a failure later on is the server's, not the client's.

Usage::

    interop_client.py --target 127.0.0.1:PORT --keys devices.keys.jsonl \\
        --device mtr-000001 --seq N

Cases, each with a 10 s deadline:

* ``push``          seq N, properly signed, via ``Push``            -> ack code 0
* ``push_bad_sig``  seq N+1, signed with a freshly generated key     -> ack code 16
* ``push_stream``   seq N+2, properly signed, ``PushStream`` of one  -> ack code 0

Each accepted frame carries 4 readings (one ``1-0:1.8.0`` register in Wh), no samples
and no events. Prints one JSON object on stdout::

    {"ok": true, "results": [{"case": "push", "code": 0, "message": "", ...}, ...]}

and exits 0 only if every expectation held, 1 otherwise (2 for bad usage).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac as py_hmac
import json
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives import hmac as crypto_hmac  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

SIGNING_DOMAIN = b"FEEDER-FRAME-V1\x00"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
ALGS = ("ed25519", "hmac-sha256")
DEFAULT_TIMEOUT_S = 10.0

# grpc status code numbers used in FrameAck.code (shared/protocol.md).
CODE_OK = 0
CODE_UNAUTHENTICATED = 16

# The contract's test vector (shared/protocol.md, "Test vector").
VECTOR = {
    "device_id": "mtr-000001",
    "key_id": "k1",
    "seq": 7,
    "payload": "0801",
    "signing_input": "4645454445522d4652414d452d563100000a6d74722d30303030303100026b31"
    "0000000000000007000000020801",
    "ed25519_seed": bytes(range(32)).hex(),
    "ed25519_public_key": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "ed25519_signature": "08ca64975c3947c61615bbe51ae965fa8253219e5d2bf4f9111e96a4cfae809f"
    "ac4c002b047810a7e38a7d9aaa3e091ae980bbc3ef62e1cd152a0979022f2200",
    "hmac_secret": bytes(range(32)).hex(),
    "hmac_tag": "fbecafb0a1adc2052b3c978a71527ab686b397a23f492f2c0671c0ccf44d0d99",
}


class ClientError(Exception):
    """A problem that stops the client before or outside the test cases."""


# --------------------------------------------------------------------------- signing


def signing_input(device_id: str, key_id: str, seq: int, payload: bytes) -> bytes:
    """The exact byte string a device signs (shared/protocol.md, "Signing")."""
    d = device_id.encode("utf-8")
    k = key_id.encode("utf-8")
    if len(d) > 0xFFFF or len(k) > 0xFFFF or len(payload) > 0xFFFFFFFF:
        raise ValueError("field too long for the signing input")
    if not 0 <= seq <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"seq {seq} out of u64 range")
    return b"".join(
        (
            SIGNING_DOMAIN,
            struct.pack(">H", len(d)),
            d,
            struct.pack(">H", len(k)),
            k,
            struct.pack(">Q", seq),
            struct.pack(">I", len(payload)),
            payload,
        )
    )


def sign_ed25519(seed: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def sign_hmac_sha256(secret: bytes, message: bytes) -> bytes:
    h = crypto_hmac.HMAC(secret, hashes.SHA256())
    h.update(message)
    return h.finalize()


@dataclass(frozen=True)
class DeviceKey:
    """One line of a device key file (shared/protocol.md, "Device key file")."""

    device_id: str
    key_id: str
    alg: str
    material: bytes  # Ed25519 seed (32 bytes) or HMAC secret (16..64 bytes)
    kind: str = "meter"
    labels: dict[str, str] = field(default_factory=dict)

    def sign(self, message: bytes) -> bytes:
        if self.alg == "ed25519":
            return sign_ed25519(self.material, message)
        return sign_hmac_sha256(self.material, message)

    def with_fresh_material(self) -> "DeviceKey":
        """Same device, key_id and algorithm, but a key nobody registered."""
        if self.alg == "ed25519":
            fresh = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        else:
            fresh = os.urandom(len(self.material))
        assert fresh != self.material
        return DeviceKey(self.device_id, self.key_id, self.alg, fresh, self.kind, self.labels)


def self_check() -> None:
    """Check signing_input, Ed25519 and HMAC against the contract's test vector.

    Also checks that the vector's payload is what our generated ``Frame`` stub
    serializes for sent_at_ms = 1, i.e. that the stubs match the contract's field
    numbering. Raises ClientError describing the first mismatch.
    """
    v = VECTOR
    payload = bytes.fromhex(v["payload"])
    si = signing_input(v["device_id"], v["key_id"], v["seq"], payload)
    if si.hex() != v["signing_input"]:
        raise ClientError(
            f"self-check: signing input mismatch\n  got  {si.hex()}\n  want {v['signing_input']}"
        )

    seed = bytes.fromhex(v["ed25519_seed"])
    pub = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    if pub.hex() != v["ed25519_public_key"]:
        raise ClientError(
            f"self-check: Ed25519 public key mismatch\n  got  {pub.hex()}\n  want {v['ed25519_public_key']}"
        )
    sig = sign_ed25519(seed, si)
    if sig.hex() != v["ed25519_signature"]:
        raise ClientError(
            f"self-check: Ed25519 signature mismatch\n  got  {sig.hex()}\n  want {v['ed25519_signature']}"
        )

    secret = bytes.fromhex(v["hmac_secret"])
    tag = sign_hmac_sha256(secret, si)
    if tag.hex() != v["hmac_tag"]:
        raise ClientError(f"self-check: HMAC-SHA256 mismatch\n  got  {tag.hex()}\n  want {v['hmac_tag']}")
    # Cross-check PyCA's HMAC against the standard library's.
    if py_hmac.new(secret, si, hashlib.sha256).digest() != tag:
        raise ClientError("self-check: PyCA HMAC disagrees with hashlib HMAC")

    from feeder_proto_gen import load_stubs

    pb = load_stubs()
    encoded = pb.frame_pb2.Frame(sent_at_ms=1).SerializeToString()
    if encoded != payload:
        raise ClientError(
            f"self-check: Frame(sent_at_ms=1) encodes to {encoded.hex()}, the vector says {v['payload']}"
        )


# --------------------------------------------------------------------------- key file


def load_device_key(path: Path, device_id: str, key_id: str | None = None) -> DeviceKey:
    """Read the device's key from a JSON Lines key file.

    With several keys for the device (rotation) and no ``key_id``, the last one listed
    is used: rotation appends the new key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ClientError(f"cannot read key file {path}: {e}") from e

    matches: list[DeviceKey] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ClientError(f"{path}:{lineno}: not valid JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("device_id") != device_id:
            continue
        if key_id is not None and obj.get("key_id") != key_id:
            continue
        alg = obj.get("alg")
        if alg not in ALGS:
            raise ClientError(f"{path}:{lineno}: alg must be one of {ALGS}, got {alg!r}")
        hex_field = "seed" if alg == "ed25519" else "secret"
        try:
            material = bytes.fromhex(obj[hex_field])
        except (KeyError, TypeError, ValueError) as e:
            raise ClientError(f"{path}:{lineno}: {alg} key needs a hex '{hex_field}'") from e
        if alg == "ed25519" and len(material) != 32:
            raise ClientError(f"{path}:{lineno}: Ed25519 seed must be 32 bytes, got {len(material)}")
        if alg == "hmac-sha256" and not 16 <= len(material) <= 64:
            raise ClientError(f"{path}:{lineno}: HMAC secret must be 16..64 bytes, got {len(material)}")
        kid = obj.get("key_id")
        if not isinstance(kid, str) or not kid:
            raise ClientError(f"{path}:{lineno}: missing key_id")
        matches.append(
            DeviceKey(
                device_id=device_id,
                key_id=kid,
                alg=alg,
                material=material,
                kind=str(obj.get("kind", "meter")),
                labels={str(k): str(v) for k, v in (obj.get("labels") or {}).items()},
            )
        )
    if not matches:
        which = f"device {device_id!r}" + (f" key {key_id!r}" if key_id else "")
        raise ClientError(f"{which} not found in key file {path}")
    return matches[-1]


# --------------------------------------------------------------------------- frames


def build_frame(pb: Any, key: DeviceKey, seq: int, now_ms: int) -> Any:
    """A plausible meter frame: 4 readings, one a Wh energy register.

    The register grows with seq so that consecutive frames from this client do not
    trip the register_decrease check. Values stay inside normal bands (230.1 V,
    50.00 Hz) so that the checks have nothing to flag.
    """
    f = pb.frame_pb2
    firmware = key.labels.get("firmware") or "interop-py/1"
    readings = [
        f.Reading(ts_ms=now_ms, interval_s=0, obis="1-0:1.8.0", value=5_000_000 + 25 * seq,
                  scaler=0, unit=f.WH, status=0),
        f.Reading(ts_ms=now_ms, interval_s=0, obis="1-0:1.7.0", value=1520, scaler=0,
                  unit=f.W, status=0),
        f.Reading(ts_ms=now_ms, interval_s=0, obis="1-0:32.7.0", value=2301, scaler=-1,
                  unit=f.V, status=0),
        f.Reading(ts_ms=now_ms, interval_s=0, obis="1-0:14.7.0", value=5000, scaler=-2,
                  unit=f.HZ, status=0),
    ]
    return f.Frame(sent_at_ms=now_ms, firmware=firmware, readings=readings)


READINGS_PER_FRAME = 4


def signed_frame(pb: Any, key: DeviceKey, seq: int, now_ms: int) -> Any:
    payload = build_frame(pb, key, seq, now_ms).SerializeToString()
    sig = key.sign(signing_input(key.device_id, key.key_id, seq, payload))
    return pb.ingest_pb2.SignedFrame(
        device_id=key.device_id, key_id=key.key_id, seq=seq, payload=payload, signature=sig
    )


# --------------------------------------------------------------------------- cases


def _check_acks(case: str, expected: int, sent: Any, responses: list[Any]) -> dict[str, Any]:
    """Turn the server's responses to one single-frame request into a result row."""
    result: dict[str, Any] = {
        "case": case,
        "device_id": sent.device_id,
        "seq": sent.seq,
        "expected": expected,
        "code": None,
        "message": "",
        "ok": False,
    }
    if len(responses) != 1:
        result["failure"] = f"expected 1 PushResponse, got {len(responses)}"
        return result
    acks = list(responses[0].acks)
    if len(acks) != 1:
        result["failure"] = f"expected 1 ack for 1 frame, got {len(acks)}"
        return result
    ack = acks[0]
    result["code"] = ack.code
    result["message"] = ack.message
    problems = []
    if ack.device_id != sent.device_id or ack.seq != sent.seq:
        problems.append(f"ack is for ({ack.device_id!r}, {ack.seq}), not ({sent.device_id!r}, {sent.seq})")
    if ack.code != expected:
        problems.append(f"expected code {expected}, got {ack.code}")
    if problems:
        result["failure"] = "; ".join(problems)
    else:
        result["ok"] = True
    if expected == CODE_OK:
        result["readings"] = READINGS_PER_FRAME
    return result


def _rpc_failure(case: str, expected: int, sent: Any, err: Exception) -> dict[str, Any]:
    import grpc

    code = err.code() if isinstance(err, grpc.RpcError) and hasattr(err, "code") else None
    details = err.details() if isinstance(err, grpc.RpcError) and hasattr(err, "details") else str(err)
    return {
        "case": case,
        "device_id": sent.device_id,
        "seq": sent.seq,
        "expected": expected,
        "code": code.value[0] if code is not None else None,
        "message": details or "",
        "ok": False,
        "failure": f"the call failed as a whole with {code.name if code else type(err).__name__}"
        f" instead of answering with a FrameAck: {details}",
    }


def run_cases(pb: Any, channel: Any, key: DeviceKey, seq: int, timeout: float) -> list[dict[str, Any]]:
    import grpc

    stub = pb.ingest_pb2_grpc.IngestStub(channel)
    results = []

    def push(case: str, expected: int, frame: Any) -> None:
        try:
            resp = stub.Push(pb.ingest_pb2.PushRequest(frames=[frame]), timeout=timeout)
            results.append(_check_acks(case, expected, frame, [resp]))
        except grpc.RpcError as e:
            results.append(_rpc_failure(case, expected, frame, e))

    now = int(time.time() * 1000)
    push("push", CODE_OK, signed_frame(pb, key, seq, now))

    forged = signed_frame(pb, key.with_fresh_material(), seq + 1, int(time.time() * 1000))
    push("push_bad_sig", CODE_UNAUTHENTICATED, forged)

    frame = signed_frame(pb, key, seq + 2, int(time.time() * 1000))
    try:
        responses = list(
            stub.PushStream(iter([pb.ingest_pb2.PushRequest(frames=[frame])]), timeout=timeout)
        )
        results.append(_check_acks("push_stream", CODE_OK, frame, responses))
    except grpc.RpcError as e:
        results.append(_rpc_failure("push_stream", CODE_OK, frame, e))
    return results


def make_channel(args: argparse.Namespace) -> Any:
    import grpc

    if args.tls_ca or args.tls_cert:
        def read(p: str | None) -> bytes | None:
            return Path(p).read_bytes() if p else None

        creds = grpc.ssl_channel_credentials(
            root_certificates=read(args.tls_ca),
            private_key=read(args.tls_key),
            certificate_chain=read(args.tls_cert),
        )
        return grpc.secure_channel(args.target, creds)
    return grpc.insecure_channel(args.target)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="edge address, e.g. 127.0.0.1:50051")
    p.add_argument("--keys", required=True, type=Path, help="device key file (JSON Lines)")
    p.add_argument("--device", required=True, help="device_id to play")
    p.add_argument("--seq", required=True, type=int, help="first seq to use (N, N+1, N+2 are used)")
    p.add_argument("--key-id", help="key_id to sign with (default: the device's last key in the file)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline per call, seconds")
    p.add_argument("--tls-ca", help="PEM root certificate(s): use TLS instead of plaintext")
    p.add_argument("--tls-cert", help="PEM client certificate chain (mTLS)")
    p.add_argument("--tls-key", help="PEM client private key (mTLS)")
    args = p.parse_args(argv)
    if args.seq < 1 or args.seq + 2 > 0xFFFFFFFFFFFFFFFF:
        p.error("--seq must be >= 1 and leave room for seq+2 in u64")
    if not DEVICE_ID_RE.match(args.device):
        p.error("--device must be 1..64 bytes of [A-Za-z0-9._:-]")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: dict[str, Any] = {"ok": False, "target": args.target, "device_id": args.device, "results": []}
    try:
        self_check()
        out["self_check"] = "passed"
        key = load_device_key(args.keys, args.device, args.key_id)
        out["key_id"], out["alg"] = key.key_id, key.alg

        from feeder_proto_gen import load_stubs

        pb = load_stubs()
        channel = make_channel(args)
        with channel:
            out["results"] = run_cases(pb, channel, key, args.seq, args.timeout)
        out["ok"] = bool(out["results"]) and all(r["ok"] for r in out["results"])
    except ClientError as e:
        out["error"] = str(e)
        print(f"interop_client: {e}", file=sys.stderr)
    except Exception as e:  # keep the one-JSON-object contract even on surprises
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"interop_client: unexpected error: {out['error']}", file=sys.stderr)

    for r in out["results"]:
        if not r["ok"]:
            print(f"interop_client: FAIL {r['case']} seq={r['seq']}: {r.get('failure')}", file=sys.stderr)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
