//! `sintra sim` as a user runs it: a clean batch exits 0 and its JSON names the batch; a batch
//! with violations exits 1 and prints, per failing seed, the one command that replays it; a
//! protocol that does not exist is a one-line error with exit status 2; every protocol runs.

use std::process::Command;

fn sintra(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sintra"))
        .args(args)
        .output()
        .expect("the sintra binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_clean_batch_exits_zero_with_a_json_summary() {
    let (code, stdout, stderr) = sintra(&[
        "sim",
        "--protocol",
        "rbc",
        "--servers",
        "4",
        "--seeds",
        "24",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for field in [
        "\"protocol\":\"rbc\"",
        "\"servers\":4",
        "\"seeds\":24",
        "\"violations\":0",
    ] {
        assert!(stdout.contains(field), "{field} missing: {stdout}");
    }
}

#[test]
fn violations_exit_non_zero_and_print_the_replay_command() {
    // Ten deliveries cannot complete a broadcast: every seed violates termination.
    let (code, stdout, _) = sintra(&[
        "sim",
        "--protocol",
        "cbc",
        "--seeds",
        "3",
        "--first-seed",
        "5",
        "--adversary",
        "fifo",
        "--budget",
        "10",
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("termination"), "{stdout}");
    let replay = "replay: sintra sim --protocol cbc --servers 4 --seeds 1 --first-seed 6 \
                  --adversary fifo --budget 10";
    assert!(stdout.contains(replay), "{stdout}");
    let (code, again, _) = sintra(&[
        "sim",
        "--protocol",
        "cbc",
        "--servers",
        "4",
        "--seeds",
        "1",
        "--first-seed",
        "6",
        "--adversary",
        "fifo",
        "--budget",
        "10",
    ]);
    assert_eq!(code, 1);
    assert!(again.contains("FAILED seed 6 (fifo)"), "{again}");
}

#[test]
fn every_protocol_runs() {
    for protocol in ["rbc", "cbc", "aba", "mvba", "abc", "scabc"] {
        let (code, stdout, stderr) = sintra(&[
            "sim",
            "--protocol",
            protocol,
            "--seeds",
            "2",
            "--adversary",
            "equivocate+random",
            "--json",
        ]);
        assert_eq!(code, 0, "{protocol}: {stdout}{stderr}");
        assert!(stdout.contains("\"violations\":0"), "{protocol}: {stdout}");
    }
}

#[test]
fn bench_sim_prints_its_table() {
    let (code, stdout, stderr) = sintra(&[
        "bench",
        "sim",
        "--servers",
        "4",
        "--batch",
        "8",
        "--rounds",
        "2",
        "--request-bytes",
        "16",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("cpu µs/req"), "{stdout}");
    assert!(stdout.contains("\n  4        64 "), "{stdout}");
}

#[test]
fn unknown_names_are_a_clear_error() {
    let (code, _, stderr) = sintra(&["sim", "--protocol", "paxos"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown protocol `paxos`"), "{stderr}");
    let (code, _, stderr) = sintra(&["sim", "--protocol", "rbc", "--adversary", "gremlins"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown adversary"), "{stderr}");
}
