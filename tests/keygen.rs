//! Property: `sintra keygen` writes a complete, private, loadable group, and the service key it
//! announces in `service-key.pem` verifies threshold-RSA signatures with stock openssl.
//! Also: impossible groups (`n <= 3t`) and unknown RSA sizes are refused with a clear message.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use sintra_crypto::dealer::{GroupKeys, ServerKeys};

#[derive(Deserialize)]
struct GroupFile {
    servers: Vec<ServerEntry>,
    keys: GroupKeys,
}

#[derive(Deserialize)]
struct ServerEntry {
    id: u16,
    endpoint: String,
}

fn sintra(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sintra"))
        .args(args)
        .output()
        .expect("the sintra binary runs")
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn keygen_writes_a_group_whose_service_key_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("group");
    let output = sintra(&[
        "keygen",
        "--servers",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--hosts",
        "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001,10.0.0.4:7001",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("n = 4, t = 1"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("safe prime"));

    let group: GroupFile = read_toml(&out.join("group.toml"));
    group.keys.check().unwrap();
    assert_eq!(group.keys.service.modulus_bits(), 2048);
    assert_eq!(
        group
            .servers
            .iter()
            .map(|s| (s.id, s.endpoint.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, "10.0.0.1:7001"),
            (2, "10.0.0.2:7001"),
            (3, "10.0.0.3:7001"),
            (4, "10.0.0.4:7001")
        ]
    );

    let mut servers = Vec::new();
    for i in 1..=4 {
        let path = out.join(format!("server-{i}/keys.toml"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is readable by others", path.display());
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        let keys: ServerKeys = read_toml(&path);
        keys.check(&group.keys).unwrap();
        assert!(out.join(format!("server-{i}/config.toml")).exists());
        servers.push(keys);
    }

    // Two servers (t + 1) sign; the combination must verify under the PEM, with openssl.
    let message = b"sintra: a document signed by the service";
    let shares: Vec<_> = servers[2..]
        .iter()
        .map(|s| s.service.sign(&group.keys.service, message))
        .collect();
    let signature = group.keys.service.combine(message, &shares).unwrap();
    std::fs::write(dir.path().join("message"), message).unwrap();
    std::fs::write(dir.path().join("signature"), signature.as_bytes()).unwrap();
    let verify = |file: &str| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(out.join("service-key.pem"))
            .arg("-signature")
            .arg(dir.path().join("signature"))
            .arg(dir.path().join(file))
            .output()
            .expect("openssl is installed (scripts/test installs it)")
    };
    let ok = verify("message");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "Verified OK");

    std::fs::write(dir.path().join("other"), b"sintra: another document").unwrap();
    let bad = verify("other");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("Verification failure"));

    // A second run into the same directory is refused: old keys are never overwritten.
    let again = sintra(&["keygen", "--servers", "4", "--out", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a group"));
}

#[test]
fn keygen_refuses_impossible_groups_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g");
    let out = out.to_str().unwrap();
    let too_many_faults = sintra(&["keygen", "--servers", "6", "--faults", "2", "--out", out]);
    assert!(!too_many_faults.status.success());
    let stderr = String::from_utf8_lossy(&too_many_faults.stderr);
    assert!(stderr.contains("n > 3t"), "{stderr}");

    let odd_size = sintra(&[
        "keygen",
        "--servers",
        "4",
        "--rsa-bits",
        "1000",
        "--out",
        out,
    ]);
    assert!(!odd_size.status.success());
    assert!(String::from_utf8_lossy(&odd_size.stderr).contains("--rsa-bits 1000"));

    let hosts = sintra(&[
        "keygen",
        "--servers",
        "4",
        "--hosts",
        "a:1,b:2",
        "--out",
        out,
    ]);
    assert!(!hosts.status.success());
    assert!(String::from_utf8_lossy(&hosts.stderr).contains("2 endpoints for 4 servers"));
    assert!(!Path::new(out).join("group.toml").exists());
}
