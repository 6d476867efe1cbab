//! `sintra client`: one request to a group — kv, a time-stamp, a directory entry — printed only
//! once its answer verified under the group's service key (crate `sintra-client`).
//!
//! Exit status: 0 for a verified answer, 1 when no server gave one (every server's failure is
//! listed) or the service's verified answer is an error, 2 for a usage or group-file error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use sintra_client::kv::KvAnswer;
use sintra_client::{Client, ClientError, ClientOptions, Freshness, KvOutcome};
use sintra_config::GroupFile;
use sintra_crypto::ServerId;

/// Arguments of `sintra client`.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The group file (`group.toml` from `sintra keygen` or `sintra up`).
    #[arg(long)]
    group: PathBuf,
    /// Ask this server first (default: a random one); the others are asked in turn after it if
    /// it fails.
    #[arg(long)]
    server: Option<u16>,
    /// How long one server may take to answer, in milliseconds, before the next is asked.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Servers asked at most (default: every server of the group once).
    #[arg(long)]
    attempts: Option<usize>,
    /// Submit confidentially: the request is encrypted under the group's threshold encryption
    /// key and decrypted only after its position in the order is fixed.
    #[arg(long)]
    encrypt: bool,
    #[command(subcommand)]
    request: KvCommand,
}

/// A request: kv, the notary, the directory.
#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Store VALUE under KEY; prints the previous value.
    Put {
        /// The key (at most 1 KiB).
        key: String,
        /// The value (at most 60 KiB).
        value: String,
    },
    /// Read the value under KEY.
    Get {
        /// The key.
        key: String,
    },
    /// Time-stamp FILE at the group's notary (RFC 3161): writes the verified reply to OUT
    /// (default FILE.tsr) and the query to FILE.tsq, for `openssl ts -verify`. With `--encrypt`
    /// the query is encrypted to the group and read only after its serial number is fixed.
    Notarize {
        /// The document.
        file: PathBuf,
        /// Where the reply goes (default: FILE.tsr).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Look KEY up in the directory; prints the verified statement (JSON) or writes it to OUT.
    /// Ordered by default (current, one signature per lookup); `--local` asks one server for a
    /// proof from its last signed checkpoint state (no ordering, stale by up to a checkpoint).
    DirGet {
        /// The key.
        key: String,
        /// Where the signed statement goes (default: printed).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Answered by one server from its last signed checkpoint state, without ordering.
        #[arg(long)]
        local: bool,
        /// With `--local`: refuse a state signed longer ago than this many seconds (by this
        /// machine's clock) and ask the next server.
        #[arg(long, requires = "local")]
        max_age_s: Option<f64>,
        /// With `--local`: refuse a state covering fewer log entries than this.
        #[arg(long, requires = "local")]
        min_height: Option<u64>,
    },
    /// Write VALUE under KEY in the directory, signed with the owner key in OWNER_KEY (64 hex
    /// digits of an Ed25519 seed; created when the file does not exist). The version is the
    /// entry's next one.
    DirPut {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The owner's key file.
        #[arg(long)]
        owner_key: PathBuf,
    },
    /// Check a saved directory statement or local answer under the group's service key (no
    /// server is asked).
    DirVerify {
        /// The statement (JSON, as `dir-get [--local] --out` saved it).
        file: PathBuf,
    },
}

/// Runs `sintra client`.
pub fn run(args: ClientArgs) -> ExitCode {
    let group = match GroupFile::load(&args.group) {
        Ok(group) => group,
        Err(error) => {
            eprintln!("sintra client: {error}");
            return ExitCode::from(2);
        }
    };
    let first_server = match args.server {
        None => None,
        Some(index) => match ServerId::new(index).filter(|id| group.server(*id).is_some()) {
            Some(id) => Some(id),
            None => {
                eprintln!(
                    "sintra client: --server {index}: the group has servers 1 to {}",
                    group.servers.len()
                );
                return ExitCode::from(2);
            }
        },
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        attempts: args.attempts,
        first_server,
        encrypt: args.encrypt,
    };
    let client = match Client::with_options(group, options) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("sintra client: {error}");
            return ExitCode::from(2);
        }
    };
    let (what, outcome) = match &args.request {
        KvCommand::Notarize { file, out } => {
            return notarize(&client, file, out.as_deref(), args.encrypt);
        }
        KvCommand::DirGet {
            key,
            out,
            local: false,
            ..
        } => return dir_get(&client, key, out.as_deref()),
        KvCommand::DirGet {
            key,
            out,
            local: true,
            max_age_s,
            min_height,
        } => {
            let max_age = match max_age_s.map(Duration::try_from_secs_f64).transpose() {
                Ok(max_age) => max_age,
                Err(error) => {
                    eprintln!("sintra client: --max-age-s: {error}");
                    return ExitCode::from(2);
                }
            };
            let freshness = Freshness {
                max_age,
                min_height: *min_height,
            };
            return dir_get_local(&client, key, out.as_deref(), freshness);
        }
        KvCommand::DirPut {
            key,
            value,
            owner_key,
        } => return dir_put(&client, key, value, owner_key),
        KvCommand::DirVerify { file } => return dir_verify(&client, file),
        KvCommand::Put { key, value } => (
            format!("put {}", show(key.as_bytes())),
            client.put(key.as_bytes(), value.as_bytes()),
        ),
        KvCommand::Get { key } => (
            format!("get {}", show(key.as_bytes())),
            client.get(key.as_bytes()),
        ),
    };
    match outcome {
        Ok(outcome) => report(&what, &args.request, &outcome, args.encrypt),
        Err(error @ ClientError::InvalidRequest(_)) => {
            eprintln!("sintra client: {what}: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("sintra client: {what}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn failed(what: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("sintra client: {what}: {error}");
    ExitCode::FAILURE
}

fn notes(failures: &[sintra_client::ServerFailure]) {
    for failure in failures {
        eprintln!("note: {failure}; asked the next server");
    }
}

fn notarize(
    client: &Client,
    file: &std::path::Path,
    out: Option<&std::path::Path>,
    encrypt: bool,
) -> ExitCode {
    use sha2::Digest as _;
    let what = format!("notarize {}", file.display());
    let document = match std::fs::read(file) {
        Ok(document) => document,
        Err(error) => return failed(&what, error),
    };
    let digest: [u8; 32] = sha2::Sha256::digest(&document).into();
    let notarized = match client.notarize(&digest, encrypt) {
        Ok(notarized) => notarized,
        Err(error) => return failed(&what, error),
    };
    notes(&notarized.failures);
    let reply_path = out.map_or_else(|| file.with_extension("tsr"), std::path::Path::to_path_buf);
    let query_path = file.with_extension("tsq");
    if let Err(error) = std::fs::write(&reply_path, &notarized.reply)
        .and_then(|()| std::fs::write(&query_path, &notarized.query))
    {
        return failed(&what, error);
    }
    println!(
        "{what}: serial {}, time {}, from {}{}; verified against the service key
         reply: {}
query: {}
check: openssl ts -verify -in {} -queryfile {} -CAfile tsa-certificate.pem",
        notarized.serial,
        notarized.time,
        notarized.server,
        if encrypt { ", submitted encrypted" } else { "" },
        reply_path.display(),
        query_path.display(),
        reply_path.display(),
        query_path.display(),
    );
    ExitCode::SUCCESS
}

fn describe(lookup: &sintra_client::directory::Lookup) -> String {
    match &lookup.entry {
        Some(entry) => format!(
            "{:?} = {} (version {}, owner {}) at position {}",
            lookup.key,
            show(&entry.value),
            entry.version,
            hex::encode(entry.owner),
            lookup.position
        ),
        None => format!("{:?}: no entry at position {}", lookup.key, lookup.position),
    }
}

fn dir_get(client: &Client, key: &str, out: Option<&std::path::Path>) -> ExitCode {
    let what = format!("dir-get {key:?}");
    let answer = match client.directory_get(key) {
        Ok(answer) => answer,
        Err(error) => return failed(&what, error),
    };
    notes(&answer.failures);
    print_lookup(
        &what,
        &describe(&answer.lookup),
        answer.server,
        &answer.json,
        out,
    )
}

/// Prints a verified directory answer: what it says and from which server, then its JSON —
/// unless the JSON goes to `out`.
fn print_lookup(
    what: &str,
    description: &str,
    server: ServerId,
    json: &[u8],
    out: Option<&std::path::Path>,
) -> ExitCode {
    if let Some(out) = out
        && let Err(error) = std::fs::write(out, json)
    {
        return failed(what, error);
    }
    println!("{description} — from {server}; verified against the service key");
    if out.is_none() {
        println!("{}", String::from_utf8_lossy(json));
    }
    ExitCode::SUCCESS
}

fn describe_local(lookup: &sintra_client::directory::LocalLookup) -> String {
    let state = &lookup.state;
    let what = match &lookup.entry {
        Some(entry) => format!(
            "{:?} = {} (version {}, owner {})",
            lookup.key,
            show(&entry.value),
            entry.version,
            hex::encode(entry.owner)
        ),
        None => format!("{:?}: no entry", lookup.key),
    };
    let ordered = match now_ms().checked_sub(state.time_ms) {
        _ if state.time_ms == 0 => "no entry ordered yet".to_owned(),
        Some(age_ms) => format!(
            "last entry ordered at {} ms, {:.1} s ago",
            state.time_ms,
            age_ms as f64 / 1000.0
        ),
        None => format!("last entry ordered at {} ms", state.time_ms),
    };
    format!(
        "{what} as of position {} (checkpoint round {}, {ordered}, {} entries); a local \
         answer: stale by up to one checkpoint interval, or more from a faulty server",
        state.height, state.round, state.count
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn dir_get_local(
    client: &Client,
    key: &str,
    out: Option<&std::path::Path>,
    freshness: Freshness,
) -> ExitCode {
    let what = format!("dir-get --local {key:?}");
    let answer = match client.directory_get_local(key, freshness) {
        Ok(answer) => answer,
        Err(error) => return failed(&what, error),
    };
    notes(&answer.failures);
    print_lookup(
        &what,
        &describe_local(&answer.lookup),
        answer.server,
        &answer.json,
        out,
    )
}

/// The owner's Ed25519 key from its file (64 hex digits), made and saved (0600) when absent.
fn owner_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
                anyhow::anyhow!("{}: not 64 hex digits of an Ed25519 seed", path.display())
            })?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(file, "{}", hex::encode(seed))?;
            eprintln!("note: new owner key written to {}", path.display());
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        Err(error) => Err(anyhow::anyhow!("{}: {error}", path.display())),
    }
}

fn dir_put(client: &Client, key: &str, value: &str, owner_key_path: &std::path::Path) -> ExitCode {
    use ed25519_dalek::Signer as _;
    let what = format!("dir-put {key:?}");
    let owner = match owner_key(owner_key_path) {
        Ok(owner) => owner,
        Err(error) => return failed(&what, error),
    };
    let version = match client.directory_get(key) {
        Ok(current) => current.lookup.entry.map_or(1, |entry| entry.version + 1),
        Err(error) => return failed(&what, error),
    };
    let message = match sintra_client::directory::put_message(key, value.as_bytes(), version) {
        Ok(message) => message,
        Err(error) => return failed(&what, error),
    };
    let body = serde_json::json!({
        "value": hex::encode(value.as_bytes()),
        "version": version,
        "owner": hex::encode(owner.verifying_key().as_bytes()),
        "signature": hex::encode(owner.sign(&message).to_bytes()),
    });
    match client.directory_put(key, body.to_string().as_bytes()) {
        Ok(answer) => {
            notes(&answer.failures);
            println!(
                "{} — from {}; verified against the service key",
                describe(&answer.lookup),
                answer.server
            );
            ExitCode::SUCCESS
        }
        Err(error) => failed(&what, error),
    }
}

fn dir_verify(client: &Client, file: &std::path::Path) -> ExitCode {
    let what = format!("dir-verify {}", file.display());
    let json = match std::fs::read(file) {
        Ok(json) => json,
        Err(error) => return failed(&what, error),
    };
    // A local answer carries the signed checkpoint state; an ordered one its own signature.
    let local = serde_json::from_slice::<serde_json::Value>(&json)
        .is_ok_and(|value| value.get("state").is_some());
    let service = &client.keys().service;
    let verified = if local {
        sintra_client::directory::verify_local_lookup(&json, service)
            .map(|lookup| describe_local(&lookup))
    } else {
        sintra_client::directory::verify_lookup(&json, service).map(|lookup| describe(&lookup))
    };
    match verified {
        Ok(described) => {
            println!("{described} — verified against the service key");
            ExitCode::SUCCESS
        }
        Err(error) => failed(&what, format!("does not verify: {error}")),
    }
}

fn report(what: &str, request: &KvCommand, outcome: &KvOutcome, encrypted: bool) -> ExitCode {
    let submitted = &outcome.submitted;
    for failure in &submitted.failures {
        eprintln!("note: {failure}; asked the next server");
    }
    let answer = &submitted.answer;
    let proof = format!(
        "position {}, round {}, from {}{}; verified against the service key",
        answer.position,
        answer.round,
        submitted.server,
        if encrypted {
            ", submitted encrypted"
        } else {
            ""
        }
    );
    match (&outcome.result, request) {
        (KvAnswer::Ok { found: true, value }, KvCommand::Put { .. }) => {
            println!("{what}: previous value {} — {proof}", show(value));
        }
        (KvAnswer::Ok { found: false, .. }, KvCommand::Put { .. }) => {
            println!("{what}: no previous value — {proof}");
        }
        (KvAnswer::Ok { found: true, value }, _) => {
            println!("{what}: {} — {proof}", show(value));
        }
        (KvAnswer::Ok { found: false, .. }, _) => {
            println!("{what}: not found — {proof}");
        }
        (KvAnswer::Error { message }, _) => {
            eprintln!("sintra client: {what}: the service refused it: {message} — {proof}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Bytes as a quoted string when they are printable UTF-8, as hex otherwise.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => format!(
            "0x{}",
            bytes
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_quoted_and_anything_else_is_hex() {
        assert_eq!(show(b"hello world"), "\"hello world\"");
        assert_eq!(show(b"a\"b"), "\"a\\\"b\"");
        assert_eq!(show(b"\x00\xff"), "0x00ff");
        assert_eq!(show(b"line\nbreak"), "0x6c696e650a627265616b");
        assert_eq!(show(b""), "\"\"");
    }
}
