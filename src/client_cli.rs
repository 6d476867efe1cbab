//! `sintra client`: one kv request to a group, printed only once its answer verified under the
//! group's service key (crate `sintra-client`).
//!
//! Exit status: 0 for a verified answer, 1 when no server gave one (every server's failure is
//! listed) or the service's verified answer is an error, 2 for a usage or group-file error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use sintra_client::kv::KvAnswer;
use sintra_client::{Client, ClientError, ClientOptions, KvOutcome};
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

/// A kv request.
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
        (KvAnswer::Ok { found: true, value }, KvCommand::Get { .. }) => {
            println!("{what}: {} — {proof}", show(value));
        }
        (KvAnswer::Ok { found: false, .. }, KvCommand::Get { .. }) => {
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
