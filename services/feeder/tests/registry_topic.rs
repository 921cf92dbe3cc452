//! Revocation you can trust, on a real broker process (tansu): the registry published to
//! its topic with `feeder devices publish` (signed by a provisioning key), two edges and
//! a stream stage reading it (`--registry-topic`, `--provisioning-keys`; the stream takes
//! its labels from it and follows it too); `feeder devices revoke` is
//! refused at both edges within 5 seconds (code 7: the device's every key revoked) while
//! another device's frames are still acked; an unsigned record that would lift the
//! revocation is refused by both and counted.
//!
//! A writer audits the topic into `registry_changes` (`--registry-topic` on the writer);
//! it is killed with SIGKILL after the enrolments are stored and restarted, so the
//! revocation's `previous_status` comes from the state it rebuilt from the topic. DuckDB
//! then finds exactly one row per accepted change, none for the unsigned record.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use feeder_proto::v1::PushRequest;
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_sim::SimDevice;
use feeder_testkit::python;

use support::*;

const NOW_MS: i64 = 1_764_028_800_000;
const PREFIX: &str = "rt";

/// Runs `feeder <args>` to completion; returns its stdout, failing with its stderr.
fn feeder(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_feeder"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "feeder {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The code the edge at `addr` answers to `dev`'s next frame.
async fn push(addr: &str, dev: &mut SimDevice, clock: &mut i64) -> i32 {
    *clock += 900_000;
    let frame = dev.next_frame(*clock).frame;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let resp = IngestClient::new(channel)
        .push(PushRequest {
            frames: vec![frame],
        })
        .await
        .unwrap()
        .into_inner();
    resp.acks[0].code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_refused_at_every_edge_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = tansu_fleet(dir.path(), 3, 19, NOW_MS - 30 * 86_400_000);
    let kafka = [
        "--brokers",
        &fleet.kafka.brokers.clone(),
        "--topic-prefix",
        PREFIX,
        "--partitions",
        "2",
        "--replication",
        "1",
    ]
    .map(str::to_string);
    let kafka: Vec<&str> = kafka.iter().map(String::as_str).collect();
    let prov_key = dir.path().join("provisioning.key");
    let prov_key = prov_key.display().to_string();
    let public = feeder(&[
        "devices",
        "provisioning-key",
        "--out",
        &prov_key,
        "--key-id",
        "prov-1",
    ]);
    let prov_pub = dir.path().join("provisioning.pub");
    std::fs::write(&prov_pub, &public).unwrap();
    let prov_pub = prov_pub.display().to_string();

    let publish = |signed: bool, registry: &str| {
        let mut args = vec!["devices", "publish", "--registry", registry];
        args.extend(&kafka);
        if signed {
            args.extend(["--signing-key", prov_key.as_str()]);
        }
        feeder(&args)
    };
    let out = publish(true, &fleet.registry);
    assert!(out.contains("3 line(s) published, 0 unchanged"), "{out}");
    let out = publish(true, &fleet.registry);
    assert!(out.contains("0 line(s) published, 3 unchanged"), "{out}");

    let topic = format!("{PREFIX}.registry");
    let data = dir.path().join("data").display().to_string();
    let writer_args = {
        let mut a = vec![
            "writer",
            "--data",
            &data,
            "--flush-max-age",
            "300ms",
            "--registry-topic",
            &topic,
            "--provisioning-keys",
            &prov_pub,
            "--instance-id",
            "writer-0",
        ];
        a.extend(&kafka);
        a
    };
    let changes_written = "feeder_writer_rows_written_total{dataset=\"registry_changes\"}";
    let mut writer = Stage::spawn("writer", dir.path(), &writer_args, &[]);
    writer.wait_ready(Duration::from_secs(60));
    wait_until("the enrolments stored", Duration::from_secs(30), || {
        metric(writer.metrics, changes_written) >= 3.0
    });
    let enrolled_files = std::fs::read_dir(dir.path().join("data/registry_changes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(enrolled_files >= 1);
    // killed without a goodbye; the restart resumes from the committed offset, with the
    // audit state rebuilt from the topic before it
    wait_until("the enrolments committed", Duration::from_secs(30), || {
        metric(writer.metrics, "feeder_writer_records_committed_total") >= 3.0
    });
    writer.sigkill();
    let mut writer = Stage::spawn("writer", dir.path(), &writer_args, &[]);
    writer.wait_ready(Duration::from_secs(60));

    let mut edges = Vec::new();
    for name in ["edge-a", "edge-b"] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "edge",
            "--listen",
            &listen,
            "--registry-topic",
            &topic,
            "--provisioning-keys",
            &prov_pub,
            "--edge-keys",
            &fleet.edge_keys,
        ];
        args.extend(&kafka);
        let mut stage = Stage::spawn(name, dir.path(), &args, &[]);
        stage.wait_ready(Duration::from_secs(60));
        edges.push((listen, stage));
    }

    let mut args = vec![
        "stream",
        "--registry-topic",
        &topic,
        "--provisioning-keys",
        &prov_pub,
        "--edge-keys",
        &fleet.edge_keys,
    ];
    args.extend(&kafka);
    let mut stream = Stage::spawn("stream", dir.path(), &args, &[]);
    stream.wait_ready(Duration::from_secs(60));
    let stream_reloads = "feeder_stream_registry_reloads_total";
    wait_until(
        "the stream reads the topic",
        Duration::from_secs(30),
        || metric(stream.metrics, stream_reloads) >= 1.0,
    );

    let mut clock = NOW_MS;
    let (victim, rest) = fleet.devices.split_at_mut(1);
    let victim = &mut victim[0];
    let other = &mut rest[0];
    for (addr, _) in &edges {
        assert_eq!(push(addr, victim, &mut clock).await, 0);
        assert_eq!(push(addr, other, &mut clock).await, 0);
    }

    let revoked = Instant::now();
    let mut args = vec![
        "devices",
        "revoke",
        &victim.device_id,
        "--signing-key",
        &prov_key,
    ];
    args.extend(&kafka);
    let out = feeder(&args);
    assert!(out.contains("1 key(s)"), "{out}");
    let mut refused_after = Vec::new();
    for (addr, _) in &edges {
        loop {
            let code = push(addr, victim, &mut clock).await;
            if code == 7 {
                refused_after.push(revoked.elapsed());
                break;
            }
            assert_eq!(code, 0, "before the revocation arrives: accepted");
            assert!(
                revoked.elapsed() < Duration::from_secs(5),
                "{addr} still accepts the revoked device after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            push(addr, other, &mut clock).await,
            0,
            "other devices go on"
        );
    }
    println!("revocation refused at both edges after {refused_after:?} (from the revoke command)");
    wait_until(
        "the stream follows the revocation",
        Duration::from_secs(5),
        || metric(stream.metrics, stream_reloads) >= 2.0,
    );

    // an unsigned line that would lift the revocation: refused by both, counted
    let lifted = dir.path().join("lifted.jsonl");
    std::fs::write(&lifted, std::fs::read_to_string(&fleet.registry).unwrap()).unwrap();
    let out = publish(false, &lifted.display().to_string());
    assert!(out.contains("1 line(s) published"), "{out}");
    let shown = feeder(&[
        "devices",
        "show",
        &victim.device_id,
        "--brokers",
        &fleet.kafka.brokers,
        "--topic-prefix",
        PREFIX,
    ]);
    assert!(
        shown.contains("signer (unsigned)") && shown.contains("signer prov-1"),
        "{shown}"
    );
    for (addr, stage) in &edges {
        wait_until(
            "the unsigned record counted",
            Duration::from_secs(10),
            || {
                metric(
                    stage.metrics,
                    "feeder_edge_registry_records_refused_total{reason=\"unsigned\"}",
                ) >= 1.0
            },
        );
        assert_eq!(push(addr, victim, &mut clock).await, 7, "still revoked");
    }

    let victim_id = victim.device_id.clone();
    // the way back from a bad publish: `--prune` publishes a file and removes every key
    // it does not name; the removed device is unknown at both edges from then on
    let (kept, dropped) = {
        let text = std::fs::read_to_string(&fleet.registry).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let dropped = lines.pop().unwrap().to_string();
        (lines.join("\n") + "\n", dropped)
    };
    let removed_id = fleet
        .devices
        .iter()
        .position(|d| dropped.contains(&format!("\"{}\"", d.device_id)))
        .unwrap();
    assert_ne!(
        fleet.devices[removed_id].device_id, victim_id,
        "the victim is revoked"
    );
    let pruned = dir.path().join("pruned.jsonl");
    std::fs::write(&pruned, kept).unwrap();
    let mut args = vec![
        "devices",
        "publish",
        "--prune",
        "--registry",
        pruned.to_str().unwrap(),
        "--signing-key",
        &prov_key,
    ];
    args.extend(&kafka);
    let out = feeder(&args);
    assert!(out.contains("1 removed"), "{out}");
    for (addr, _) in &edges {
        let dev = &mut fleet.devices[removed_id];
        let mut refused = false;
        for _ in 0..100 {
            if push(addr, dev, &mut clock).await == 16 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "{addr}: a removed device is unknown (code 16)");
    }
    let removed_device = fleet.devices[removed_id].device_id.clone();

    // the audit: the restarted writer stored the revocation and the removal, and refused
    // the unsigned line
    wait_until("the revocation stored", Duration::from_secs(30), || {
        metric(writer.metrics, changes_written) >= 2.0
            && metric(
                writer.metrics,
                "feeder_writer_registry_records_refused_total{reason=\"unsigned\"}",
            ) >= 1.0
    });
    writer.sigterm();
    writer.wait_exit(Duration::from_secs(30));
    let script = format!(
        "import duckdb\n\
         rows = duckdb.sql(\"SELECT device_id, key_id, alg, status, coalesce(previous_status, '-'), signer \
         FROM read_parquet('{data}/registry_changes/**/*.parquet', hive_partitioning = true) \
         ORDER BY changed_at, device_id\").fetchall()\n\
         for r in rows: print(' '.join(r))\n"
    );
    let out = python(&["-c", &script]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows.len(),
        5,
        "three enrolments, one revocation, one removal:\n{out}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.ends_with("ed25519 active - prov-1"))
            .count(),
        3,
        "{out}"
    );
    assert_eq!(
        rows[3],
        format!("{victim_id} k1 ed25519 revoked active prov-1"),
        "{out}"
    );
    assert_eq!(
        rows[4],
        format!("{removed_device} k1 ed25519 removed active prov-1"),
        "{out}"
    );
}
