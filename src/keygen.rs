//! `sintra keygen`: the trusted dealer's command.
//!
//! Writes, under `--out DIR`:
//! - `group.toml` — public: `n`, `t`, every server's endpoint, every public and verification key;
//! - `service-key.pem` — public: the service's RSA key (SubjectPublicKeyInfo), for stock verifiers;
//! - `server-<i>/keys.toml` — secret (mode 0600, directory 0700): server `i`'s key shares;
//! - `server-<i>/config.toml` — server `i`'s own settings (listen address, file paths).
//!
//! It refuses to write into a directory that already holds a group, so an old key set is never
//! overwritten by accident. The dealer keeps nothing: the shares are dropped (and zeroized) when
//! the command ends.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{self, GroupKeys, GroupParameters, ServerKeys};
use sintra_crypto::rsa::MODULUS_BITS_ALLOWED;

/// First port of the default endpoints: server `i` listens on `127.0.0.1:(7000 + i)`.
const DEFAULT_PORT_BASE: u16 = 7000;

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
    /// Comma-separated `host:port` of every server, in order; default `127.0.0.1:7001,...`.
    #[arg(long, value_delimiter = ',')]
    hosts: Option<Vec<String>>,
}

/// The public group file, `group.toml`.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupFile {
    /// Every server, in id order.
    pub servers: Vec<ServerEntry>,
    /// Every public key of the group, with `n` and `t`.
    pub keys: GroupKeys,
}

/// One server's public entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerEntry {
    /// The server's id (1-based).
    pub id: ServerId,
    /// Where its peers and clients reach it (`host:port`).
    pub endpoint: String,
}

/// One server's own configuration, `server-<i>/config.toml`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerConfig {
    /// The server's id.
    pub id: ServerId,
    /// Address to listen on.
    pub listen: String,
    /// The group file, relative to this file's directory.
    pub group: PathBuf,
    /// The secret key file, relative to this file's directory.
    pub keys: PathBuf,
    /// The data directory, relative to this file's directory.
    pub data_dir: PathBuf,
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
    let endpoints = endpoints(&args, parameters.servers)?;
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
    write_all(&args.out, &group, &servers, &endpoints)?;

    println!("wrote {}", args.out.join("group.toml").display());
    println!("wrote {}", args.out.join("service-key.pem").display());
    for (server, endpoint) in servers.iter().zip(&endpoints) {
        println!(
            "wrote {}  ({}, endpoint {endpoint})",
            args.out
                .join(format!("server-{}", server.id.get()))
                .display(),
            server.id
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

fn endpoints(args: &KeygenArgs, servers: u16) -> anyhow::Result<Vec<String>> {
    match &args.hosts {
        None => Ok(ServerId::all(servers)
            .map(|id| format!("127.0.0.1:{}", DEFAULT_PORT_BASE + id.get()))
            .collect()),
        Some(hosts) => {
            if hosts.len() != usize::from(servers) {
                bail!(
                    "--hosts lists {} endpoints for {servers} servers",
                    hosts.len()
                );
            }
            for host in hosts {
                let valid = host
                    .rsplit_once(':')
                    .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
                if !valid {
                    bail!("--hosts: {host:?} is not host:port");
                }
            }
            Ok(hosts.clone())
        }
    }
}

fn write_all(
    out: &Path,
    group: &GroupKeys,
    servers: &[ServerKeys],
    endpoints: &[String],
) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let group_file = GroupFile {
        servers: servers
            .iter()
            .zip(endpoints)
            .map(|(keys, endpoint)| ServerEntry {
                id: keys.id,
                endpoint: endpoint.clone(),
            })
            .collect(),
        keys: group.clone(),
    };
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
    for (keys, endpoint) in servers.iter().zip(endpoints) {
        let dir = out.join(format!("server-{}", keys.id.get()));
        create_private_dir(&dir)?;
        write_file(
            dir.join("keys.toml"),
            toml::to_string(keys)?.as_bytes(),
            0o600,
        )?;
        let port = endpoint
            .rsplit_once(':')
            .map(|(_, port)| port)
            .unwrap_or("0");
        let config = ServerConfig {
            id: keys.id,
            listen: format!("0.0.0.0:{port}"),
            group: PathBuf::from("../group.toml"),
            keys: PathBuf::from("keys.toml"),
            data_dir: PathBuf::from("data"),
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
