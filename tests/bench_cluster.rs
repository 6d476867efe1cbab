//! Property: `sintra bench cluster` runs end to end on a real loopback cluster — it deals a group,
//! starts four replica processes, gets signed answers over the streaming interface, every sampled
//! answer verifies against the group's service key, no replica dies before it is stopped, every
//! replica stops cleanly on SIGTERM, and the JSON report carries the fields the README quotes.
//! A notary run gets granted time-stamps that verify (also with `openssl ts -verify`).
//! Also: a benchmark stopped by SIGTERM mid-run stops its replicas before it exits, and impossible
//! arguments are refused before anything starts. (No timing is asserted: the numbers are the
//! benchmark's, not the test's.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_short_bench_run_orders_requests_and_every_sampled_answer_verifies() {
    let output = Command::new(env!("CARGO_BIN_EXE_sintra"))
        .args([
            "bench",
            "cluster",
            "--servers",
            "4",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--clients",
            "2",
            "--verify-every",
            "10",
            "--json",
        ])
        .output()
        .expect("the sintra binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not one JSON object ({error}):\n{stdout}"));
    let number = |name: &str| {
        report[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no number {name} in {report}"))
    };
    assert!(number("ordered") > 0.0, "nothing ordered: {report}");
    assert!(number("ordered_per_s") > 0.0, "{report}");
    assert!(number("delivered_per_s") > 0.0, "{report}");
    assert!(number("sampled") > 0.0, "no answer sampled: {report}");
    assert_eq!(
        number("verified"),
        number("sampled"),
        "a sampled answer did not verify: {report}"
    );
    assert_eq!(number("service_errors"), 0.0, "{report}");
    assert_eq!(number("request_bytes"), 250.0);
    assert_eq!(report["servers"], 4);
    assert_eq!(report["load"], "closed");
    assert_eq!(
        report["nodes_crashed"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["nodes_unclean_stop"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert!(number("cpu_cores") > 0.0, "{report}");
    for field in ["p50", "p90", "p99", "max"] {
        assert!(
            report["latency_ms"][field].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
    }
}

#[test]
fn a_short_notary_run_gets_time_stamps_that_verify() {
    let output = Command::new(env!("CARGO_BIN_EXE_sintra"))
        .args([
            "bench",
            "cluster",
            "--service",
            "tsa",
            "--servers",
            "4",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--clients",
            "2",
            "--window",
            "8",
            "--verify-every",
            "5",
            "--json",
        ])
        .output()
        .expect("the sintra binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not one JSON object ({error}):\n{stdout}"));
    let number = |name: &str| {
        report[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no number {name} in {report}"))
    };
    assert_eq!(report["service"], "tsa");
    assert!(number("ordered") > 0.0, "no time-stamp answered: {report}");
    assert!(number("verified") > 0.0, "no time-stamp verified: {report}");
    assert_eq!(number("verified"), number("sampled"), "{report}");
    assert_eq!(number("service_errors"), 0.0, "{report}");
    // openssl (installed wherever the tests run) accepted every token it was given.
    assert!(number("openssl_checked") > 0.0, "{report}");
    assert_eq!(
        number("openssl_verified"),
        number("openssl_checked"),
        "{report}"
    );
    assert!(number("share_time_ms") > 0.0, "{report}");
    assert!(number("ceiling_per_s") > 0.0, "{report}");
}

#[test]
fn impossible_arguments_are_refused_before_anything_starts() {
    for args in [
        &["--servers", "0"][..],
        &["--payload", "10"],
        &["--clients", "0"],
        &["--window", "0"],
        &["--rate", "0"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sintra"))
            .args(["bench", "cluster"])
            .args(args)
            .output()
            .expect("the sintra binary runs");
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(
            !stderr.contains("dealing"),
            "{args:?}: refused only after dealing: {stderr}"
        );
    }
}

/// The pids of the processes whose parent is `parent` (from `/proc/<pid>/stat`).
#[cfg(target_os = "linux")]
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Field 4 (ppid) follows the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

#[cfg(target_os = "linux")]
#[test]
fn a_benchmark_stopped_by_sigterm_stops_its_replicas() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_sintra"))
        .args([
            "bench",
            "cluster",
            "--servers",
            "4",
            "--duration",
            "120",
            "--clients",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sintra binary runs");
    let stderr = bench.stderr.take().expect("stderr is piped");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("replicas ready") {
                let _ = ready_tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    if ready_rx.recv_timeout(Duration::from_secs(90)).is_err() {
        let _ = bench.kill();
        let _ = bench.wait();
        panic!(
            "the replicas never got ready:\n{}",
            reader.join().unwrap_or_default()
        );
    }
    let replicas = children_of(bench.id());
    assert_eq!(
        replicas.len(),
        4,
        "expected 4 replica processes: {replicas:?}"
    );

    let pid = rustix::process::Pid::from_child(&bench);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM sent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = bench.try_wait().expect("waiting for the bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            let _ = bench.wait();
            panic!("the bench did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().unwrap_or_default();
    assert!(!status.success(), "an interrupted run must not succeed");
    assert!(
        stderr.contains("SIGTERM"),
        "no word of the signal:\n{stderr}"
    );
    // The bench reaps its replicas before it exits: none of them is left.
    let left: Vec<u32> = replicas
        .into_iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(left.is_empty(), "replicas still running: {left:?}");
}
