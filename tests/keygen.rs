//! Property: `sintra keygen` writes a complete, private, loadable group, and the service key it
//! announces in `service-key.pem` verifies threshold-RSA signatures with stock openssl.
//! Every server's files load back through `sintra-config` (link keys that match, gateway
//! endpoints, listen addresses). Also: impossible groups (`n <= 3t`), unknown RSA sizes and
//! unusable `--hosts` are refused with a clear message. The dealer's root and notary
//! certificates verify with `openssl verify`, the group file names them and the default CA
//! policy, the admin token it prints is the one whose digest the policy holds (its file private),
//! and a CA built from those files issues a certificate openssl accepts under the root.

use std::path::Path;
use std::process::Command;

use sintra_config::{GroupFile, SecretsFile, load_server};
use sintra_crypto::ServerId;

fn sintra(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sintra"))
        .args(args)
        .output()
        .expect("the sintra binary runs")
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
        "10.0.0.1:7001,10.0.0.2:7001,node-3,127.0.0.1:7004",
        "--name",
        "Example Group",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("n = 4, t = 1"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("safe prime"));

    let group = GroupFile::load(&out.join("group.toml")).unwrap();
    assert_eq!(group.keys.service.modulus_bits(), 2048);
    assert_eq!(
        group
            .servers
            .iter()
            .map(|s| (s.id.get(), s.endpoint.as_str(), s.gateway.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, "10.0.0.1:7001", "10.0.0.1:8001"),
            (2, "10.0.0.2:7001", "10.0.0.2:8001"),
            (3, "node-3:7003", "node-3:8003"),
            (4, "127.0.0.1:7004", "127.0.0.1:8004")
        ]
    );
    let listen = [
        ("0.0.0.0:7001", "0.0.0.0:8001"),
        ("0.0.0.0:7001", "0.0.0.0:8001"),
        ("0.0.0.0:7003", "0.0.0.0:8003"),
        // A loopback group listens on loopback only.
        ("127.0.0.1:7004", "127.0.0.1:8004"),
    ];

    let mut servers = Vec::new();
    for i in 1..=4u16 {
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
        // The whole server loads as the node will load it: ids agree, the shares are the
        // group's, and the link secret is the one whose public key the group pins.
        let loaded = load_server(&out.join(format!("server-{i}/config.toml"))).unwrap();
        assert_eq!(loaded.config.id, ServerId::new(i).unwrap());
        assert_eq!(loaded.me, group.servers[usize::from(i) - 1]);
        assert_eq!(
            loaded.secrets.link_public_bytes(),
            group.servers[usize::from(i) - 1].link_key_bytes()
        );
        let (links, gateway) = listen[usize::from(i) - 1];
        assert_eq!(loaded.config.listen.to_string(), links);
        assert_eq!(loaded.config.gateway_listen.to_string(), gateway);
        assert_eq!(loaded.config.keys, path.parent().unwrap().join("keys.toml"));
        assert!(loaded.config.group.exists());
        assert_eq!(loaded.config.tunables, Default::default());
        let keys = SecretsFile::load(&path).unwrap().shares;
        keys.check(&group.keys).unwrap();
        servers.push(keys);
    }
    let mut link_keys: Vec<_> = group.servers.iter().map(|s| &s.link_key).collect();
    link_keys.sort();
    link_keys.dedup();
    assert_eq!(link_keys.len(), 4, "every server has its own link key");

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

    check_service_files(&out, &stdout, &group, &servers, dir.path());

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

    // A links port whose gateway port (+ 1000) would not exist is refused, as is a shared one.
    let overflow = sintra(&[
        "keygen",
        "--servers",
        "1",
        "--hosts",
        "a:64600",
        "--out",
        out,
    ]);
    assert!(!overflow.status.success());
    assert!(String::from_utf8_lossy(&overflow.stderr).contains("beyond 65535"));
    let shared = sintra(&[
        "keygen",
        "--servers",
        "4",
        "--hosts",
        "a:7001,a:8001,b,c",
        "--out",
        out,
    ]);
    assert!(!shared.status.success());
    assert!(String::from_utf8_lossy(&shared.stderr).contains("two servers would use a:8001"));
    let unnamed = sintra(&["keygen", "--servers", "4", "--name", " ", "--out", out]);
    assert!(!unnamed.status.success());
    assert!(String::from_utf8_lossy(&unnamed.stderr).contains("--name"));
    assert!(!Path::new(out).join("group.toml").exists());
}

fn openssl(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The root and notary certificates, the default policy and the admin token of a dealt group.
fn check_service_files(
    out: &Path,
    stdout: &str,
    group: &GroupFile,
    servers: &[sintra_crypto::dealer::ServerKeys],
    scratch: &Path,
) {
    use sintra_services::ca::{self, Ca, CaPolicy};
    use sintra_services::{ExecutionContext, Service};

    let root = out.join("ca-certificate.pem");
    let notary = out.join("tsa-certificate.pem");
    let (ok, text) = openssl(&[
        "x509".as_ref(),
        "-noout".as_ref(),
        "-text".as_ref(),
        "-in".as_ref(),
        root.as_os_str(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Subject: O = Example Group, CN = Example Group root CA"),
        "{text}"
    );
    assert!(text.contains("CA:TRUE"), "{text}");
    let (ok, text) = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        root.as_os_str(),
        root.as_os_str(),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        root.as_os_str(),
        "-purpose".as_ref(),
        "timestampsign".as_ref(),
        notary.as_os_str(),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
    // The root certifies the service key itself.
    let (ok, root_key) = openssl(&[
        "x509".as_ref(),
        "-noout".as_ref(),
        "-pubkey".as_ref(),
        "-in".as_ref(),
        root.as_os_str(),
    ]);
    assert!(ok);
    assert_eq!(
        root_key.trim(),
        group.keys.service.to_public_key_pem().trim()
    );

    // The group file names the files; the loaders read them.
    let group_path = out.join("group.toml");
    let root_der = group.load_ca_certificate(&group_path).unwrap().unwrap();
    assert!(group.load_tsa_certificate(&group_path).unwrap().is_some());
    let policy = group.load_ca_policy(&group_path).unwrap().unwrap();
    assert_eq!(policy.names[0].pattern, "*.example-group.internal");

    let token_path = out.join("ca-admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let token = std::fs::read_to_string(&token_path).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64);
    assert!(stdout.contains(token), "the token is shown once");
    let expected = CaPolicy::with_token("*.example-group.internal", token.as_bytes(), 90);
    assert_eq!(policy.admin_token_sha256, expected.admin_token_sha256);
    assert!(
        !std::fs::read_to_string(out.join("ca-policy.toml"))
            .unwrap()
            .contains(token)
    );

    // A CA from these files issues a certificate openssl accepts under the root.
    let key = scratch.join("www.key");
    let csr = scratch.join("www.csr");
    let (ok, text) = openssl(&[
        "req".as_ref(),
        "-new".as_ref(),
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:P-256".as_ref(),
        "-nodes".as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-subj".as_ref(),
        "/CN=www.example-group.internal".as_ref(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    assert!(ok, "{text}");
    let csr_der = sintra_services::x509::csr_to_der(&std::fs::read(&csr).unwrap()).unwrap();
    let mut authority = Ca::new(&root_der, policy).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let context = ExecutionContext {
        position: 0,
        round: 0,
        time_ms: now_ms,
    };
    let request = ca::encode_issue(&[0; 16], token.as_bytes(), &csr_der).unwrap();
    let answer = authority.execute(&context, &request);
    let message = authority
        .signing_message(&request, &answer)
        .expect("a certificate to sign");
    let service = &group.keys.service;
    let shares: Vec<_> = servers[..2]
        .iter()
        .map(|s| s.service.sign(service, &message))
        .collect();
    let signature = service.combine(&message, &shares).unwrap();
    let reply = ca::http_reply(&authority.complete(&request, &answer, signature.as_bytes()));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let cert = scratch.join("www.pem");
    std::fs::write(&cert, reply.body).unwrap();
    let (ok, text) = openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        root.as_os_str(),
        cert.as_os_str(),
    ]);
    assert!(ok && text.contains(": OK"), "{text}");
}
