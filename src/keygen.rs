//! `sintra keygen`: the trusted dealer's command.
//!
//! Writes, under `--out DIR`:
//! - `group.toml` — public: `n`, `t`, every server's links endpoint, gateway and link key, every
//!   public and verification key;
//! - `service-key.pem` — public: the service's RSA key (SubjectPublicKeyInfo), for stock verifiers;
//! - `server-<i>/keys.toml` — secret (mode 0600, directory 0700): server `i`'s link secret and
//!   key shares;
//! - `server-<i>/config.toml` — server `i`'s own settings (listen addresses, file paths).
//!
//! The formats and their loaders are the `sintra-config` crate's (docs/node.md §Files).
//!
//! It refuses to write into a directory that already holds a group, so an old key set is never
//! overwritten by accident. The dealer keeps nothing: the shares are dropped (and zeroized) when
//! the command ends.

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

/// First port of the default links endpoints: server `i` listens on `(7000 + i)`.
const LINKS_PORT_BASE: u16 = 7000;
/// First port of the default gateway endpoints: server `i` serves HTTP on `(8000 + i)`.
const GATEWAY_PORT_BASE: u16 = 8000;
/// The gateway's port is the links port plus this when `--hosts` gives `host:port`.
const GATEWAY_PORT_OFFSET: u16 = 1000;

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
    write_all(&args.out, &group, servers, &addresses)?;

    println!("wrote {}", args.out.join("group.toml").display());
    println!("wrote {}", args.out.join("service-key.pem").display());
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

fn write_all(
    out: &Path,
    group: &GroupKeys,
    servers: Vec<ServerKeys>,
    addresses: &[Addresses],
) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let link_keys: Vec<LinkKeypair> = servers
        .iter()
        .map(|_| LinkKeypair::generate(&mut rand::rngs::OsRng))
        .collect();
    let group_file = GroupFile {
        servers: servers
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
        keys: group.clone(),
    };
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
