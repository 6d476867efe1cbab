//! The files of a sintra group (docs/node.md §Files) and their validating loaders.
//!
//! `sintra keygen` writes them; the node and the client read them. Every loader checks what a
//! hand edit or a mix-up of two groups could break — counts, ids, key sizes, address syntax,
//! which server a key file belongs to — and says which file and which field is wrong, so a
//! misconfigured server stops at start-up with one clear line instead of failing handshakes or
//! signatures later.
//!
//! | file | type | loader |
//! |---|---|---|
//! | `group.toml` | [`GroupFile`] | [`GroupFile::load`] |
//! | `server-<i>/keys.toml` | [`SecretsFile`] | [`SecretsFile::load`] |
//! | `server-<i>/config.toml` | [`ServerConfig`] | [`ServerConfig::load`] |
//! | all three of one server | [`LoadedServer`] | [`load_server`] |
//! | `ca-certificate.pem`, `tsa-certificate.pem` (optional, named by the group file) | DER | [`GroupFile::load_ca_certificate`], [`GroupFile::load_tsa_certificate`] |
//! | `ca-policy.toml` (optional, named by the group file) | [`CaPolicy`] | [`GroupFile::load_ca_policy`] |
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use curve25519_dalek::montgomery::MontgomeryPoint;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{GroupKeys, ServerKeys};
use sintra_services::ca::CaPolicy;
use sintra_services::x509;

/// Largest file a loader reads (16 MiB). A group file of 1024 servers with 3072-bit RSA
/// verification keys is about 2 MiB; anything far larger is not a sintra file.
pub const FILE_BYTES_MAX: u64 = 16 << 20;

/// Bytes of an X25519 link key (public or secret); written as twice as many hex digits.
pub const LINK_KEY_BYTES: usize = 32;

/// Why a file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is larger than [`FILE_BYTES_MAX`].
    #[error("{path} is {size} bytes, more than the {FILE_BYTES_MAX} a sintra file may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The file parsed but its contents are inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads and parses a TOML file of at most [`FILE_BYTES_MAX`] bytes.
fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = read_text(path)?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

/// `relative` resolved against the directory holding `file` (absolute paths stay as they are).
fn resolve_beside(file: &Path, relative: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join(relative)
}

/// Reads a text file of at most [`FILE_BYTES_MAX`] bytes.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// The DER of the PEM certificate at `relative` (beside `group_path`), checked to parse.
fn load_certificate(
    relative: Option<&Path>,
    group_path: &Path,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(relative) = relative else {
        return Ok(None);
    };
    let path = resolve_beside(group_path, relative);
    let text = read_text(&path)?;
    // The first certificate is the one named; a file may go on with its issuer's (the notary's
    // file carries the root after it, so that `openssl ts -verify -CAfile` needs one file).
    const END: &str = "-----END CERTIFICATE-----";
    let first = text
        .find(END)
        .map_or(text.as_str(), |at| &text[..at + END.len()]);
    let der = x509::pem_to_der(first.as_bytes(), &[x509::PEM_LABEL_CERTIFICATE])
        .map_err(|error| invalid(&path, error.to_string()))?;
    x509::check_certificate(&der).map_err(|error| invalid(&path, error.to_string()))?;
    Ok(Some(der))
}

/// Parses a link key written as 64 hex digits (either case); `None` for anything else.
pub fn parse_link_key_hex(text: &str) -> Option<[u8; LINK_KEY_BYTES]> {
    let mut bytes = [0u8; LINK_KEY_BYTES];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// Whether `text` is `host:port` with a non-empty host and a port in `1..=65535`. The host may
/// be a name, an IPv4 address or a bracketed IPv6 address (`[::1]:7001`; a bare `::1:7001` is
/// ambiguous and refused); names are resolved by whoever connects, not here.
pub fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = if host.contains(':') {
            host.len() > 2 && host.starts_with('[') && host.ends_with(']')
        } else {
            !host.is_empty()
        };
        host_ok
            && !host.chars().any(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|port| port != 0)
    })
}

/// The public group file, `group.toml`: every server's addresses and link key, and every public
/// key of the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// The certification authority's root certificate (PEM), relative to `group.toml`'s
    /// directory; absent: the group runs no certification authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<PathBuf>,
    /// The notary's certificate (PEM, issued by the root to the service key), relative to
    /// `group.toml`'s directory; absent: the group runs no notary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsa_certificate: Option<PathBuf>,
    /// The certification authority's issuing policy (TOML), relative to `group.toml`'s
    /// directory; the CA runs only when both it and `ca_certificate` are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_policy: Option<PathBuf>,
    /// Every server, in id order `1..=n`.
    pub servers: Vec<ServerEntry>,
    /// Every public key of the group, with `n` and `t`.
    pub keys: GroupKeys,
}

/// One server's public entry in the group file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// The server's id (1-based).
    pub id: ServerId,
    /// Where its peers reach its links (`host:port`).
    pub endpoint: String,
    /// Where clients reach its HTTP gateway (`host:port`).
    pub gateway: String,
    /// Its static X25519 link key: 64 hex digits, pinned by every peer's links.
    pub link_key: String,
}

impl ServerEntry {
    /// The link key's 32 bytes; `None` if the field is not 64 hex digits (never after
    /// [`GroupFile::load`] or [`GroupFile::check`]).
    pub fn link_key_bytes(&self) -> Option<[u8; LINK_KEY_BYTES]> {
        parse_link_key_hex(&self.link_key)
    }
}

impl GroupFile {
    /// A group file of `servers` and `keys` that names no service files.
    pub fn new(servers: Vec<ServerEntry>, keys: GroupKeys) -> Self {
        Self {
            ca_certificate: None,
            tsa_certificate: None,
            ca_policy: None,
            servers,
            keys,
        }
    }

    /// The root certificate's DER, read from [`Self::ca_certificate`] resolved against the
    /// directory of `group_path` (the group file's own path); `None` when the field is absent.
    pub fn load_ca_certificate(&self, group_path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
        load_certificate(self.ca_certificate.as_deref(), group_path)
    }

    /// The notary certificate's DER, as [`Self::load_ca_certificate`] reads the root's.
    pub fn load_tsa_certificate(&self, group_path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
        load_certificate(self.tsa_certificate.as_deref(), group_path)
    }

    /// The CA policy read from [`Self::ca_policy`] resolved against the directory of
    /// `group_path`, checked; `None` when the field is absent.
    pub fn load_ca_policy(&self, group_path: &Path) -> Result<Option<CaPolicy>, ConfigError> {
        let Some(relative) = self.ca_policy.as_deref() else {
            return Ok(None);
        };
        let path = resolve_beside(group_path, relative);
        let text = read_text(&path)?;
        CaPolicy::from_toml(&text)
            .map(Some)
            .map_err(|error| invalid(&path, error.to_string()))
    }

    /// Reads `path` and [checks](Self::check) it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file: Self = read_toml(path)?;
        file.check().map_err(|message| invalid(path, message))?;
        Ok(file)
    }

    /// Checks the keys ([`GroupKeys::check`]), that the servers are listed as `1..=n` in order,
    /// that every link key is 64 hex digits, every endpoint and gateway is `host:port`, and that
    /// no two servers share an endpoint, a gateway or a link key.
    pub fn check(&self) -> Result<(), String> {
        self.keys
            .check()
            .map_err(|error| format!("[keys]: {error}"))?;
        let n = self.keys.parameters.servers;
        if self.servers.len() != usize::from(n) {
            return Err(format!(
                "lists {} servers, the keys are for n = {n}",
                self.servers.len()
            ));
        }
        let mut endpoints = BTreeSet::new();
        let mut gateways = BTreeSet::new();
        let mut link_keys = BTreeSet::new();
        for (expected, server) in ServerId::all(n).zip(&self.servers) {
            if server.id != expected {
                return Err(format!(
                    "server entry {} has id {}; entries must be listed as 1..=n in order",
                    expected.get(),
                    server.id.get()
                ));
            }
            let id = server.id.get();
            if !is_host_port(&server.endpoint) {
                return Err(format!(
                    "server {id}: endpoint {:?} is not host:port",
                    server.endpoint
                ));
            }
            if !is_host_port(&server.gateway) {
                return Err(format!(
                    "server {id}: gateway {:?} is not host:port",
                    server.gateway
                ));
            }
            let Some(link_key) = server.link_key_bytes() else {
                return Err(format!(
                    "server {id}: link_key is not {} hex digits",
                    LINK_KEY_BYTES * 2
                ));
            };
            if !endpoints.insert(server.endpoint.as_str()) {
                return Err(format!(
                    "server {id}: endpoint {} is another server's",
                    server.endpoint
                ));
            }
            if !gateways.insert(server.gateway.as_str()) {
                return Err(format!(
                    "server {id}: gateway {} is another server's",
                    server.gateway
                ));
            }
            if !link_keys.insert(link_key) {
                return Err(format!("server {id}: link_key is another server's"));
            }
        }
        Ok(())
    }

    /// The entry of server `id`, if it is a member.
    pub fn server(&self, id: ServerId) -> Option<&ServerEntry> {
        self.servers.get(id.slot()).filter(|entry| entry.id == id)
    }
}

/// A server's secret file, `server-<i>/keys.toml` (mode 0600): its link secret and its key
/// shares. `Debug` does not show the link secret.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    /// The server's X25519 link secret: 64 hex digits.
    pub link_secret: String,
    /// The server's key shares (its id is `shares.id`).
    pub shares: ServerKeys,
}

impl fmt::Debug for SecretsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsFile")
            .field("link_secret", &"<secret>")
            .field("shares", &self.shares)
            .finish()
    }
}

impl SecretsFile {
    /// Reads `path` and checks that the link secret is 64 hex digits and that every share
    /// carries the file's id (`shares.id`). Whether the shares belong to a given group is
    /// checked by [`load_server`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file: Self = read_toml(path)?;
        if file.link_secret_bytes().is_none() {
            return Err(invalid(
                path,
                format!("link_secret is not {} hex digits", LINK_KEY_BYTES * 2),
            ));
        }
        let ids = [
            file.shares.agreement.id(),
            file.shares.broadcast.id(),
            file.shares.coin.id(),
            file.shares.encryption.id(),
            file.shares.service.id(),
        ];
        if ids.iter().any(|id| *id != file.shares.id) {
            return Err(invalid(
                path,
                format!(
                    "[shares] is labelled {} but holds shares of other servers",
                    file.shares.id
                ),
            ));
        }
        Ok(file)
    }

    /// The link secret's 32 bytes; `None` if the field is not 64 hex digits (never after
    /// [`SecretsFile::load`]).
    pub fn link_secret_bytes(&self) -> Option<[u8; LINK_KEY_BYTES]> {
        parse_link_key_hex(&self.link_secret)
    }

    /// The X25519 public key of the link secret (what the group file must pin for this server).
    pub fn link_public_bytes(&self) -> Option<[u8; LINK_KEY_BYTES]> {
        self.link_secret_bytes()
            .map(|secret| MontgomeryPoint::mul_base_clamped(secret).to_bytes())
    }
}

/// Settings of a server that have sensible defaults; any field left out of `[tunables]` takes
/// its default, so older config files keep working as fields are added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tunables {
    /// Every this many delivered atomic-broadcast rounds the servers certify a checkpoint
    /// (default 4; at least 1).
    pub checkpoint_rounds: u64,
    /// Requests this server proposes per atomic-broadcast round (default 1024; at least 1).
    pub batch_requests_max: usize,
    /// Client requests waiting at this server to be ordered (default 16384; at least 1);
    /// beyond it the gateway refuses new requests.
    pub pending_requests_max: usize,
    /// Bytes of one encoded client request (default 64 KiB: a kv put of a 1 KiB key and a
    /// 60 KiB value fits; at least 64).
    pub request_bytes_max: usize,
    /// How the group orders requests (the same at every server): `randomized` (default; the
    /// asynchronous atomic broadcast, no timing assumption for anything) or `optimistic` (a
    /// leader sequences batches and the randomized broadcast only recovers from a slow or
    /// faulty leader; docs/protocols/oabc.md).
    pub ordering: OrderingMode,
    /// Optimistic ordering: how long requests may wait here without a delivery before this
    /// server complains about the leader (default 1000 ms; at least 10). Safety never depends
    /// on it.
    pub patience_ms: u64,
    /// Optimistic ordering: every this many delivered batches the servers certify a checkpoint
    /// (default 64; at least 1, at most 256 so that the batches after the last certificate can
    /// always be fetched inside the ordering).
    pub checkpoint_batches: u64,
    /// Optimistic ordering: the leader sends a batch that is not full at most once per this
    /// many milliseconds (default 50; at most 1000), so that every batch — each a round of the
    /// log with its own answer signature — carries what came in meanwhile.
    pub batch_interval_ms: u64,
}

/// How a group orders requests (see [`Tunables::ordering`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingMode {
    /// The randomized asynchronous atomic broadcast.
    #[default]
    Randomized,
    /// The optimistic atomic broadcast with the randomized one as its recovery.
    Optimistic,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            checkpoint_rounds: 4,
            batch_requests_max: 1024,
            pending_requests_max: 16 << 10,
            request_bytes_max: 64 << 10,
            ordering: OrderingMode::Randomized,
            patience_ms: 1000,
            checkpoint_batches: 64,
            batch_interval_ms: 50,
        }
    }
}

impl Tunables {
    /// Checks every field's documented range.
    pub fn check(&self) -> Result<(), String> {
        if self.checkpoint_rounds == 0 {
            return Err("tunables.checkpoint_rounds must be at least 1".into());
        }
        if self.batch_requests_max == 0 {
            return Err("tunables.batch_requests_max must be at least 1".into());
        }
        if self.pending_requests_max == 0 {
            return Err("tunables.pending_requests_max must be at least 1".into());
        }
        if self.request_bytes_max < 64 {
            return Err("tunables.request_bytes_max must be at least 64".into());
        }
        if self.patience_ms < 10 {
            return Err("tunables.patience_ms must be at least 10".into());
        }
        if self.batch_interval_ms > 1000 {
            return Err("tunables.batch_interval_ms must be at most 1000".into());
        }
        if !(1..=256).contains(&self.checkpoint_batches) {
            return Err("tunables.checkpoint_batches must be between 1 and 256".into());
        }
        Ok(())
    }
}

/// One server's own configuration, `server-<i>/config.toml`.
///
/// In the file, `group`, `keys` and `data_dir` are relative to the file's directory (or
/// absolute); [`ServerConfig::load`] resolves them, so after loading they can be used as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The server's id.
    pub id: ServerId,
    /// Address the links listen on.
    pub listen: SocketAddr,
    /// Address the HTTP gateway listens on.
    pub gateway_listen: SocketAddr,
    /// The group file.
    pub group: PathBuf,
    /// The secret key file.
    pub keys: PathBuf,
    /// The data directory (the store lives in `data_dir/sintra.redb`).
    pub data_dir: PathBuf,
    /// Optional settings.
    #[serde(default)]
    pub tunables: Tunables,
}

impl ServerConfig {
    /// Reads `path`, checks the tunables, and resolves `group`, `keys` and `data_dir` against
    /// the directory of `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = read_toml(path)?;
        config
            .tunables
            .check()
            .map_err(|message| invalid(path, message))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for (name, field) in [
            ("group", &mut config.group),
            ("keys", &mut config.keys),
            ("data_dir", &mut config.data_dir),
        ] {
            if field.as_os_str().is_empty() {
                return Err(invalid(path, format!("{name} is empty")));
            }
            *field = base.join(&*field);
        }
        Ok(config)
    }
}

/// Everything one server reads at start-up, checked to belong together.
#[derive(Debug)]
pub struct LoadedServer {
    /// The server's configuration (paths resolved).
    pub config: ServerConfig,
    /// The group file.
    pub group: GroupFile,
    /// The server's secrets.
    pub secrets: SecretsFile,
    /// This server's entry in the group file (a copy of `group.servers[id - 1]`).
    pub me: ServerEntry,
}

/// Loads a server's config file, then the group and key files it names, and checks that they
/// agree: the config's id is a member of the group and is the key file's id, the shares are
/// the group's ([`ServerKeys::check`]), and the link secret's public key is the one the group
/// file pins for this server.
pub fn load_server(config_path: &Path) -> Result<LoadedServer, ConfigError> {
    let config = ServerConfig::load(config_path)?;
    let group = GroupFile::load(&config.group)?;
    let secrets = SecretsFile::load(&config.keys)?;
    let id = config.id;
    let Some(entry) = group.server(id) else {
        return Err(invalid(
            config_path,
            format!(
                "id {} is not a member of the group in {} (n = {})",
                id.get(),
                config.group.display(),
                group.keys.parameters.servers
            ),
        ));
    };
    if secrets.shares.id != id {
        return Err(invalid(
            &config.keys,
            format!(
                "holds the keys of {}, but {} is configured as {id}",
                secrets.shares.id,
                config_path.display()
            ),
        ));
    }
    secrets.shares.check(&group.keys).map_err(|error| {
        invalid(
            &config.keys,
            format!(
                "the shares do not belong to the group in {}: {error}",
                config.group.display()
            ),
        )
    })?;
    if secrets.link_public_bytes() != entry.link_key_bytes() {
        return Err(invalid(
            &config.keys,
            format!(
                "link_secret does not match the link_key of {id} in {}",
                config.group.display()
            ),
        ));
    }
    let me = entry.clone();
    Ok(LoadedServer {
        config,
        group,
        secrets,
        me,
    })
}
