//! `sintra keygen`: the trusted dealer's command.
//!
//! Writes, under `--out DIR`:
//! - `group.toml` — public: `n`, `t`, every server's links endpoint, gateway and link key, every
//!   public and verification key;
//! - `service-key.pem` — public: the service's RSA key (SubjectPublicKeyInfo), for stock verifiers;
//! - `ca-certificate.pem` — public: the certification authority's self-signed root certificate
//!   for the service key (`CN=<name> root CA, O=<name>`, ten years), what `openssl verify
//!   -CAfile` trusts;
//! - `tsa-certificate.pem` — public: the notary's certificate, issued by the root to the same
//!   service key (`CN=<name> notary`, extended key usage timeStamping, critical), followed by
//!   the root certificate, so that `openssl ts -verify -CAfile tsa-certificate.pem` finds the
//!   whole chain in the one file;
//! - `ca-policy.toml` — the CA's default issuing policy (names below `<name>.internal`, RSA of
//!   2048 bits or more, ECDSA P-256/P-384, 90 days), to edit before the group starts;
//! - `ca-admin-token` — secret (mode 0600): the random token that authorizes registrations under
//!   the default policy and revocations; printed once, the policy keeps only its SHA-256;
//! - `server-<i>/keys.toml` — secret (mode 0600, directory 0700): server `i`'s link secret and
//!   key shares;
//! - `server-<i>/config.toml` — server `i`'s own settings (listen addresses, file paths).
//!
//! The formats and their loaders are the `sintra-config` crate's (docs/node.md §Files).
//!
//! It refuses to write into a directory that already holds a group, so an old key set is never
//! overwritten by accident. The two certificates are signed right after dealing, while the dealer
//! still holds every share: `t + 1` shares sign each `TBSCertificate`, the combined signature is
//! verified under the service key, and that is the last use of the shares. The dealer keeps
//! nothing: it never assembles the RSA private key, and the shares are dropped (and zeroized)
//! once written, when the command ends.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use sintra_config::{GroupFile, SecretsFile, ServerConfig, ServerEntry, Tunables, is_host_port};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{self, GroupKeys, GroupParameters, ServerKeys};
use sintra_crypto::rsa::MODULUS_BITS_ALLOWED;
use sintra_net::LinkKeypair;
use sintra_services::ca::CaPolicy;

/// First port of the default links endpoints: server `i` listens on `(7000 + i)`.
const LINKS_PORT_BASE: u16 = 7000;
/// First port of the default gateway endpoints: server `i` serves HTTP on `(8000 + i)`.
const GATEWAY_PORT_BASE: u16 = 8000;
/// The gateway's port is the links port plus this when `--hosts` gives `host:port`.
const GATEWAY_PORT_OFFSET: u16 = 1000;

/// The group name when `--name` is not given.
const DEFAULT_NAME: &str = "sintra";
/// Characters of `--name`, at most: `"<name> root CA"` must fit the 64 characters X.509 allows
/// a common name.
const NAME_CHARS_MAX: usize = 56;
/// Validity of the root and notary certificates (ten years, in days).
const DEALER_CERTIFICATE_DAYS: u64 = 3650;
/// Validity of the certificates the CA issues under the default policy, in days.
const DEFAULT_POLICY_VALIDITY_DAYS: u32 = 90;
/// Random bytes of the admin token (written as twice as many hex digits).
const ADMIN_TOKEN_BYTES: usize = 32;

/// Arguments of `sintra keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Number of servers `n` (1 to 1024).
    #[arg(long)]
    servers: u16,
    /// Number of faulty servers `t` tolerated; default: the largest `t` with `n > 3t`.
    #[arg(long)]
    faults: Option<u16>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Size of the service's RSA modulus: 2048 or 3072.
    #[arg(long, default_value_t = 2048)]
    rsa_bits: u32,
    /// Comma-separated hosts of the servers, in order: `host` (links on port 7000 + i, gateway
    /// on 8000 + i) or `host:port` (links on that port, gateway on port + 1000). IPv6 addresses
    /// in brackets. Default: 127.0.0.1 for every server.
    #[arg(long, value_delimiter = ',')]
    hosts: Option<Vec<String>>,
    /// The group's name in its certificates: `CN=<name> root CA, O=<name>` and
    /// `CN=<name> notary`; 1 to 56 printable characters.
    #[arg(long, default_value = "sintra")]
    name: String,
}

impl KeygenArgs {
    /// The arguments of `sintra keygen --servers SERVERS --out OUT`: a local group (every
    /// server on 127.0.0.1, default ports), the default `t` and RSA-2048 (what `sintra up`
    /// deals on its first run).
    pub fn local(servers: u16, out: PathBuf) -> Self {
        Self {
            servers,
            faults: None,
            out,
            rsa_bits: 2048,
            hosts: None,
            name: DEFAULT_NAME.to_owned(),
        }
    }

    /// Server `i`'s links on `127.0.0.1:(base + i)` (so its gateway on `base + 1000 + i`, its
    /// streaming interface on `base + 2000 + i`); refuses a base whose ports would pass 65535.
    pub fn with_port_base(mut self, base: u16) -> anyhow::Result<Self> {
        let last = u32::from(base) + 2 * u32::from(GATEWAY_PORT_OFFSET) + u32::from(self.servers);
        if base == 0 || last > u32::from(u16::MAX) {
            bail!(
                "--port-base {base}: the ports of {} servers would run from {} to {last};                  choose a base from 1 to {}",
                self.servers,
                u32::from(base) + 1,
                u32::from(u16::MAX)
                    .saturating_sub(2 * u32::from(GATEWAY_PORT_OFFSET) + u32::from(self.servers))
            );
        }
        self.hosts = Some(
            (1..=self.servers)
                .map(|i| format!("127.0.0.1:{}", base + i))
                .collect(),
        );
        Ok(self)
    }
}

/// Where one server is reached and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addresses {
    /// Links, as peers dial them (`host:port`).
    endpoint: String,
    /// HTTP gateway, as clients reach it (`host:port`).
    gateway: String,
    /// Links listen address.
    listen: SocketAddr,
    /// Gateway listen address.
    gateway_listen: SocketAddr,
}

/// Runs the dealer.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let parameters = GroupParameters::new(args.servers, args.faults)?;
    if !MODULUS_BITS_ALLOWED.contains(&args.rsa_bits) {
        bail!(
            "--rsa-bits {}: the service key must be one of {:?} bits",
            args.rsa_bits,
            MODULUS_BITS_ALLOWED
        );
    }
    let addresses = addresses(&args, parameters.servers)?;
    check_name(&args.name)?;
    if args.out.join("group.toml").exists() {
        bail!(
            "{} already holds a group (group.toml); choose another --out or remove it first",
            args.out.display()
        );
    }

    eprintln!(
        "sintra keygen: {} servers, up to {} faulty; service key RSA-{}",
        parameters.servers, parameters.faults, args.rsa_bits
    );
    let started = Instant::now();
    let mut progress = |line: &str| {
        eprintln!("  [{:>6.1} s] {line}", started.elapsed().as_secs_f64());
    };
    let (group, servers) = dealer::deal(
        parameters,
        args.rsa_bits,
        &mut rand::rngs::OsRng,
        &mut progress,
    )?;
    let services = service_files(&args.name, &group, &servers)?;
    write_all(&args.out, &group, servers, &addresses, &services)?;

    println!("wrote {}", args.out.join("group.toml").display());
    println!("wrote {}", args.out.join("service-key.pem").display());
    println!(
        "wrote {}  (root certificate: {} root CA)",
        args.out.join(CA_CERTIFICATE_FILE).display(),
        args.name
    );
    println!(
        "wrote {}  (notary certificate)",
        args.out.join(TSA_CERTIFICATE_FILE).display()
    );
    println!(
        "wrote {}  (CA policy: names matching {}; edit before starting the group)",
        args.out.join(CA_POLICY_FILE).display(),
        services.pattern
    );
    println!(
        "wrote {}  (mode 0600)",
        args.out.join(CA_ADMIN_TOKEN_FILE).display()
    );
    println!(
        "CA admin/registration token (shown once; the policy keeps only its SHA-256): {}",
        services.admin_token
    );
    for (id, addresses) in ServerId::all(parameters.servers).zip(&addresses) {
        println!(
            "wrote {}  ({id}, links {}, gateway {})",
            args.out.join(format!("server-{}", id.get())).display(),
            addresses.endpoint,
            addresses.gateway
        );
    }
    println!(
        "group: n = {}, t = {}; thresholds: agreement {}, broadcast {}, coin/encryption/service {}",
        parameters.servers,
        parameters.faults,
        parameters.agreement_threshold(),
        parameters.broadcast_threshold(),
        parameters.honest_threshold()
    );
    Ok(())
}

/// Every server's addresses, from `--hosts` or the defaults; refuses malformed hosts, ports
/// that overflow, and two servers (or a server's links and another's gateway) on one address.
fn addresses(args: &KeygenArgs, servers: u16) -> anyhow::Result<Vec<Addresses>> {
    let hosts = match &args.hosts {
        None => vec!["127.0.0.1".to_owned(); usize::from(servers)],
        Some(hosts) => {
            if hosts.len() != usize::from(servers) {
                bail!(
                    "--hosts lists {} endpoints for {servers} servers",
                    hosts.len()
                );
            }
            hosts.clone()
        }
    };
    let mut all = Vec::with_capacity(hosts.len());
    let mut taken = BTreeSet::new();
    for (id, host) in ServerId::all(servers).zip(&hosts) {
        let host = host.trim();
        let (name, links_port, gateway_port) = if is_host_port(host) {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
            let port: u16 = port.parse()?;
            let Some(gateway_port) = port.checked_add(GATEWAY_PORT_OFFSET) else {
                bail!(
                    "--hosts: {host}: the gateway port would be {port} + {GATEWAY_PORT_OFFSET}, \
                     beyond 65535; choose a lower links port"
                );
            };
            (name, port, gateway_port)
        } else if (!host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace))
            || (host.starts_with('[') && host.ends_with(']') && host.len() > 2)
        {
            (
                host,
                LINKS_PORT_BASE + id.get(),
                GATEWAY_PORT_BASE + id.get(),
            )
        } else {
            bail!("--hosts: {host:?} is neither a host nor host:port");
        };
        let endpoint = format!("{name}:{links_port}");
        let gateway = format!("{name}:{gateway_port}");
        for address in [&endpoint, &gateway] {
            if !taken.insert(address.clone()) {
                bail!(
                    "two servers would use {address}; give each server its own host or ports \
                     (more than 1000 servers on one host need explicit ports)"
                );
            }
        }
        let ip = listen_ip(name);
        all.push(Addresses {
            endpoint,
            gateway,
            listen: SocketAddr::new(ip, links_port),
            gateway_listen: SocketAddr::new(ip, gateway_port),
        });
    }
    Ok(all)
}

/// Where a server reached at `host` listens: on the loopback address itself for a local group
/// (so a test cluster is not exposed on every interface), on all interfaces otherwise.
fn listen_ip(host: &str) -> IpAddr {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => ip,
        _ if bare.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// File names of the service files, beside `group.toml`.
const CA_CERTIFICATE_FILE: &str = "ca-certificate.pem";
const TSA_CERTIFICATE_FILE: &str = "tsa-certificate.pem";
const CA_POLICY_FILE: &str = "ca-policy.toml";
const CA_ADMIN_TOKEN_FILE: &str = "ca-admin-token";

/// What the dealer writes for the services besides the keys.
struct ServiceFiles {
    ca_certificate_pem: String,
    tsa_certificate_pem: String,
    policy_toml: String,
    /// The name pattern of the default policy.
    pattern: String,
    /// The admin token (hex), shown once.
    admin_token: String,
}

/// Refuses a group name that is empty, too long or not printable.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty()
        || name.chars().count() > NAME_CHARS_MAX
        || name.chars().any(char::is_control)
    {
        bail!("--name {name:?}: give 1 to {NAME_CHARS_MAX} printable characters");
    }
    Ok(())
}

/// The default policy's DNS label for a group name: lower case, every other character a `-`.
fn name_label(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    let label = &label[..label.len().min(63)];
    if label.is_empty() {
        DEFAULT_NAME.to_owned()
    } else {
        label.trim_end_matches('-').to_owned()
    }
}

/// The service key's signature on `message`, made with `t + 1` of the shares the dealer still
/// holds and verified under the public key.
fn sign_with_shares(
    group: &GroupKeys,
    servers: &[ServerKeys],
    message: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let public = &group.service;
    let shares: Vec<_> = servers
        .iter()
        .take(public.threshold())
        .map(|server| server.service.sign(public, message))
        .collect();
    let signature = public
        .combine(message, &shares)
        .map_err(|error| anyhow::anyhow!("combining the certificate signature: {error}"))?;
    public
        .verify(message, &signature)
        .map_err(|error| anyhow::anyhow!("the certificate signature does not verify: {error}"))?;
    Ok(signature.as_bytes().to_vec())
}

/// The root and notary certificates, the default CA policy and its admin token.
fn service_files(
    name: &str,
    group: &GroupKeys,
    servers: &[ServerKeys],
) -> anyhow::Result<ServiceFiles> {
    use rand::RngCore as _;
    use sintra_services::x509;

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let not_after_s = now_s + DEALER_CERTIFICATE_DAYS * x509::SECONDS_PER_DAY;
    let spki = group.service.to_public_key_der();
    let certificate = |tbs: Vec<u8>| -> anyhow::Result<String> {
        let signature = sign_with_shares(group, servers, &tbs)?;
        let der = x509::assemble(&tbs, &signature)?;
        Ok(x509::to_pem(x509::PEM_LABEL_CERTIFICATE, &der)?)
    };
    let ca_certificate_pem = certificate(x509::root_tbs(name, &spki, now_s, not_after_s)?)?;
    let tsa_certificate_pem = certificate(x509::notary_tbs(name, &spki, now_s, not_after_s)?)?;

    let mut token = [0u8; ADMIN_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut token);
    let admin_token = hex::encode(token);
    let pattern = format!("*.{}.internal", name_label(name));
    let policy = CaPolicy::with_token(
        &pattern,
        admin_token.as_bytes(),
        DEFAULT_POLICY_VALIDITY_DAYS,
    );
    policy.check()?;
    let policy_toml = format!(
        "# The issuing policy of the {name} certification authority (docs/services/ca.md).\n\
         # Every server must load the same file. Tokens are stored as SHA-256 hex only.\n{}",
        policy.to_toml()?
    );
    Ok(ServiceFiles {
        ca_certificate_pem,
        tsa_certificate_pem,
        policy_toml,
        pattern,
        admin_token,
    })
}

fn write_all(
    out: &Path,
    group: &GroupKeys,
    servers: Vec<ServerKeys>,
    addresses: &[Addresses],
    services: &ServiceFiles,
) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let link_keys: Vec<LinkKeypair> = servers
        .iter()
        .map(|_| LinkKeypair::generate(&mut rand::rngs::OsRng))
        .collect();
    let mut group_file = GroupFile::new(
        servers
            .iter()
            .zip(addresses)
            .zip(&link_keys)
            .map(|((keys, addresses), link)| ServerEntry {
                id: keys.id,
                endpoint: addresses.endpoint.clone(),
                gateway: addresses.gateway.clone(),
                link_key: link.public().to_hex(),
            })
            .collect(),
        group.clone(),
    );
    group_file.ca_certificate = Some(PathBuf::from(CA_CERTIFICATE_FILE));
    group_file.tsa_certificate = Some(PathBuf::from(TSA_CERTIFICATE_FILE));
    group_file.ca_policy = Some(PathBuf::from(CA_POLICY_FILE));
    // What the dealer writes must load: the same checks a server runs at start-up.
    group_file
        .check()
        .map_err(|message| anyhow::anyhow!("the group file would be invalid: {message}"))?;
    write_file(
        out.join("group.toml"),
        toml::to_string(&group_file)?.as_bytes(),
        0o644,
    )?;
    write_file(
        out.join("service-key.pem"),
        group.service.to_public_key_pem().as_bytes(),
        0o644,
    )?;
    let tsa_chain = format!(
        "{}{}",
        services.tsa_certificate_pem, services.ca_certificate_pem
    );
    for (file, contents) in [
        (CA_CERTIFICATE_FILE, &services.ca_certificate_pem),
        (TSA_CERTIFICATE_FILE, &tsa_chain),
        (CA_POLICY_FILE, &services.policy_toml),
    ] {
        write_file(out.join(file), contents.as_bytes(), 0o644)?;
    }
    write_file(
        out.join(CA_ADMIN_TOKEN_FILE),
        format!("{}\n", services.admin_token).as_bytes(),
        0o600,
    )?;
    for ((shares, addresses), link) in servers.into_iter().zip(addresses).zip(&link_keys) {
        let id = shares.id;
        let dir = out.join(format!("server-{}", id.get()));
        create_private_dir(&dir)?;
        let secrets = SecretsFile {
            link_secret: link.secret_hex(),
            shares,
        };
        write_file(
            dir.join("keys.toml"),
            toml::to_string(&secrets)?.as_bytes(),
            0o600,
        )?;
        let config = ServerConfig {
            id,
            listen: addresses.listen,
            gateway_listen: addresses.gateway_listen,
            group: PathBuf::from("../group.toml"),
            keys: PathBuf::from("keys.toml"),
            data_dir: PathBuf::from("data"),
            tunables: Tunables::default(),
        };
        write_file(
            dir.join("config.toml"),
            toml::to_string(&config)?.as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)
}

/// Writes a file created with `mode` from the start, so a secret is never readable by others even
/// for an instant.
fn write_file(path: PathBuf, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    set_mode(&path, mode)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(hosts: Option<&str>) -> KeygenArgs {
        KeygenArgs {
            servers: 4,
            faults: None,
            out: PathBuf::from("unused"),
            rsa_bits: 2048,
            hosts: hosts.map(|hosts| hosts.split(',').map(str::to_owned).collect()),
            name: DEFAULT_NAME.to_owned(),
        }
    }

    #[test]
    fn a_port_base_gives_every_server_three_ports_below_65536() {
        let args = KeygenArgs::local(4, PathBuf::from("unused"))
            .with_port_base(20_000)
            .unwrap();
        let all = addresses(&args, 4).unwrap();
        assert_eq!(all[0].endpoint, "127.0.0.1:20001");
        assert_eq!(all[3].gateway, "127.0.0.1:21004");
        assert!(
            KeygenArgs::local(4, PathBuf::from("unused"))
                .with_port_base(63_533)
                .is_err()
        );
        assert!(
            KeygenArgs::local(4, PathBuf::from("unused"))
                .with_port_base(63_531)
                .is_ok()
        );
        assert!(
            KeygenArgs::local(4, PathBuf::from("unused"))
                .with_port_base(0)
                .is_err()
        );
    }

    #[test]
    fn default_addresses_are_local_and_listen_on_loopback_only() {
        let all = addresses(&args(None), 4).unwrap();
        let last = &all[3];
        assert_eq!(last.endpoint, "127.0.0.1:7004");
        assert_eq!(last.gateway, "127.0.0.1:8004");
        assert_eq!(last.listen.to_string(), "127.0.0.1:7004");
        assert_eq!(last.gateway_listen.to_string(), "127.0.0.1:8004");
    }

    #[test]
    fn hosts_give_names_or_ports_and_bad_ones_are_refused() {
        let all = addresses(&args(Some("a.example,[::1],localhost:9000,10.1.1.1:1")), 4).unwrap();
        assert_eq!(all[0].endpoint, "a.example:7001");
        assert_eq!(all[0].gateway, "a.example:8001");
        assert_eq!(all[0].listen.to_string(), "0.0.0.0:7001");
        assert_eq!(all[1].endpoint, "[::1]:7002");
        assert_eq!(all[1].listen.to_string(), "[::1]:7002");
        assert_eq!(all[2].gateway, "localhost:10000");
        assert_eq!(all[2].gateway_listen.to_string(), "127.0.0.1:10000");
        assert_eq!(all[3].gateway, "10.1.1.1:1001");
        for bad in [
            "a,b,c,d:0",
            "a,b,c,::1",
            "a,b,c,",
            "a,b,c,x:65000",
            "a:7001,a:7001,b,c",
        ] {
            assert!(addresses(&args(Some(bad)), 4).is_err(), "{bad}");
        }
    }
}
