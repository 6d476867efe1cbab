//! Property: `sintra bench cluster` runs end to end on a real loopback cluster — it deals a group,
//! starts four replica processes, gets signed answers over the streaming interface, every sampled
//! answer verifies against the group's service key, no replica dies before it is stopped, every
//! replica stops cleanly on SIGTERM, and the JSON report carries the fields the README quotes.
//! (No timing is asserted: the numbers are the benchmark's, not the test's.)

use std::process::Command;

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
