//! Every attack frame fails verification against the registry (or is an exact replay),
//! and none of them disturbs the real device.

use feeder_core::Registry;
use feeder_core::keyfile::load_key_file;
use feeder_core::signing::VerifyError;
use feeder_proto::v1::{Frame, SignedFrame};
use feeder_sim::{KeygenConfig, SimDevice, attacks, keygen};
use prost::Message;

const NOW_MS: i64 = 1_750_000_000_000;

#[derive(Debug, PartialEq)]
enum Verdict {
    Valid,
    UnknownDevice,
    Bad(VerifyError),
}

fn verdict(reg: &Registry, f: &SignedFrame) -> Verdict {
    let Some(entry) = reg.device(&f.device_id) else {
        return Verdict::UnknownDevice;
    };
    let key = &entry.key(&f.key_id).unwrap().key;
    match key.verify(
        &mut Vec::new(),
        &f.device_id,
        &f.key_id,
        f.seq,
        &f.payload,
        &f.signature,
    ) {
        Ok(()) => Verdict::Valid,
        Err(e) => Verdict::Bad(e),
    }
}

#[test]
fn attack_frames_are_rejected_and_the_device_is_unharmed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = KeygenConfig {
        meters: 1,
        vehicles: 2,
        registry: dir.path().join("r.jsonl"),
        secrets: dir.path().join("k.jsonl"),
        seed: Some(9),
        ..KeygenConfig::default()
    };
    keygen(&cfg).unwrap();
    let reg = Registry::load(&cfg.registry).unwrap();
    for k in load_key_file(&cfg.secrets).unwrap() {
        let mut dev = SimDevice::from_key(k, NOW_MS);
        let real = dev.next_frame(NOW_MS).frame;

        let forged = attacks::forged(&dev, dev.next_seq(), NOW_MS);
        let tampered = attacks::tampered(&real);
        let replayed = attacks::replay(&real);
        let unknown = attacks::unknown_device("mtr-999999", NOW_MS);
        let cases = [
            ("real", &real, Verdict::Valid),
            ("replay", &replayed, Verdict::Valid),
            ("forged", &forged, Verdict::Bad(VerifyError::Mismatch)),
            ("tampered", &tampered, Verdict::Bad(VerifyError::Mismatch)),
            ("unknown", &unknown, Verdict::UnknownDevice),
        ];
        for (name, frame, want) in cases {
            assert_eq!(verdict(&reg, frame), want, "{} {name}", dev.device_id);
        }
        assert_eq!(replayed, real);
        assert_eq!(forged.seq, 2);
        assert_eq!(
            forged.signature.len(),
            real.signature.len(),
            "same algorithm"
        );
        assert_eq!(tampered.signature, real.signature);
        assert_ne!(tampered.payload, real.payload);
        assert!(Frame::decode(forged.payload.clone()).is_ok());
        assert!(Frame::decode(unknown.payload.clone()).is_ok());

        // the real device's next frame still takes seq 2 and verifies
        let next = dev.next_frame(NOW_MS).frame;
        assert_eq!(next.seq, 2);
        assert_eq!(
            next.payload, forged.payload,
            "forged copies the would-be payload"
        );
        assert_eq!(verdict(&reg, &next), Verdict::Valid);
    }
}
