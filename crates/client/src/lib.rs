//! The sintra client (docs/node.md): submits a request to one server's gateway and accepts an
//! answer only if it carries the service key's signature over the request's answer batch.
//!
//! The client trusts no server. It knows the group file's public keys and checks every
//! [`SignedAnswer`] against the **service key alone** and against *its own* request bytes
//! ([`SignedAnswer::verify`]): a server can delay or refuse, never forge. When a server is silent
//! (no answer within the per-server timeout), unreachable, answers with an error status, or
//! sends an answer that does not verify, the client records why and asks the next server, with
//! **the same request bytes**: atomic broadcast delivers a request (by digest) once, so a retry
//! cannot execute a request twice. Only when every attempt failed does it give up, listing
//! every server's failure.
//!
//! Requests carry a fresh random nonce drawn **once** per logical request ([`Client::put`],
//! [`Client::get`]), so two puts of the same pair are distinct requests while retries of one
//! put are the same request.
//!
//! **Confidential requests** ([`ClientOptions::encrypt`]): the encoded request is encrypted with
//! TDH2 under the group's encryption key and the label of the group's secure causal atomic
//! broadcast instance ([`confidential_label`], instance [`SCABC_INSTANCE`]) and posted to
//! `POST /v1/submit?encrypt`; servers order the ciphertext first and decrypt it only then, so
//! no server learns the request before its position is fixed. The answer is checked against the
//! plaintext request (what the service executed). The ciphertext is made once per request, so
//! retries are the same ciphertext.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod http;

use std::fmt;
use std::time::Duration;

use rand::{Rng, RngCore};
use sintra_config::GroupFile;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::GroupKeys;
use sintra_crypto::encoding::Encode;
use sintra_crypto::tdh2::Ciphertext;
use sintra_protocols::InstanceId;
use sintra_services::answers::{SignedAnswer, VerifyError};
use sintra_services::kv::{KvAnswer, KvRequest, NONCE_BYTES};

pub use sintra_services::answers;
pub use sintra_services::directory;
pub use sintra_services::kv;

/// Default of [`ClientOptions::timeout`]: how long one server may take to answer. A healthy
/// group answers in well under a second; a server that takes longer is treated as silent and
/// the next one is asked (the gateway itself gives up after 30 s).
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// The instance id of a group's secure causal atomic broadcast (confidential requests); its
/// atomic broadcast runs below it, in `sintra/scabc/abc`.
pub const SCABC_INSTANCE: &str = "sintra/scabc";

/// Bytes of a server's error message kept in a [`Failure`], at most.
pub const MESSAGE_BYTES_MAX: usize = 512;

/// How the client submits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long one server may take, from connecting to the last byte of its answer.
    pub timeout: Duration,
    /// Servers asked, at most, for one request (in turn, wrapping around); default: each server
    /// of the group once.
    pub attempts: Option<usize>,
    /// The server asked first; default: a random one per request (spreads the load).
    pub first_server: Option<ServerId>,
    /// Submit [`Client::put`] and [`Client::get`] confidentially (see the crate documentation).
    pub encrypt: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: TIMEOUT_DEFAULT,
            attempts: None,
            first_server: None,
            encrypt: false,
        }
    }
}

/// Why one server's attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within [`ClientOptions::timeout`].
    Timeout,
    /// No connection, or it broke, or the bytes were not HTTP.
    Transport(String),
    /// An HTTP status other than 200, with the server's message.
    Status {
        /// The status code.
        status: u16,
        /// The server's error message (at most [`MESSAGE_BYTES_MAX`] bytes).
        message: String,
    },
    /// A 200 whose body is not a signed answer.
    Undecodable(String),
    /// A signed answer that does not verify under the service key for this request.
    Unverified(VerifyError),
    /// A service's answer (a time-stamp, a directory statement) that does not verify under the
    /// service key for this request.
    Rejected(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => write!(f, "silent: no answer in time"),
            Self::Transport(reason) => write!(f, "{reason}"),
            Self::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            Self::Undecodable(reason) => write!(f, "not a signed answer: {reason}"),
            Self::Unverified(error) => write!(f, "answer rejected: {error}"),
            Self::Rejected(reason) => write!(f, "answer rejected: {reason}"),
        }
    }
}

/// One server's failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFailure {
    /// The server.
    pub server: ServerId,
    /// Its gateway (`host:port`).
    pub gateway: String,
    /// What went wrong.
    pub failure: Failure,
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.server, self.gateway, self.failure)
    }
}

/// Why a request has no verified answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The group file is not usable (it failed its checks).
    #[error("the group file: {0}")]
    Group(String),
    /// The request cannot be built (key or value too long, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request could not be encrypted (too long for TDH2).
    #[error("cannot encrypt the request: {0}")]
    Encryption(String),
    /// Every attempt failed; one entry per attempt, in order.
    #[error("no server gave a verifiable answer:{}", list(.failures))]
    NoVerifiedAnswer {
        /// Every attempt's failure.
        failures: Vec<ServerFailure>,
    },
    /// The service signed an answer that is not a kv answer (the group runs another service).
    #[error("the verified answer is not a kv answer: {0}")]
    NotKvAnswer(String),
}

fn list(failures: &[ServerFailure]) -> String {
    failures
        .iter()
        .map(|failure| format!("\n  {failure}"))
        .collect()
}

/// A verified answer and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The answer; it verified under the service key for the request.
    pub answer: SignedAnswer,
    /// The server that delivered it.
    pub server: ServerId,
    /// The attempts that failed before it, in order.
    pub failures: Vec<ServerFailure>,
}

/// How a service request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
}

/// A verified time-stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notarized {
    /// The DER `TimeStampReq` sent (what `openssl ts -verify -queryfile` takes).
    pub query: Vec<u8>,
    /// The DER `TimeStampResp`; it verified under the service key for the query.
    pub reply: Vec<u8>,
    /// The token's serial number (its position in the total order, from 1).
    pub serial: u64,
    /// The token's `genTime`.
    pub time: String,
    /// The server that delivered it.
    pub server: ServerId,
    /// The attempts that failed before it, in order.
    pub failures: Vec<ServerFailure>,
}

/// A verified directory statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAnswer {
    /// The statement as received (JSON), verifiable later with
    /// `sintra_services::directory::verify_lookup` (or `sintra client dir-verify`).
    pub json: Vec<u8>,
    /// What it states.
    pub lookup: sintra_services::directory::Lookup,
    /// The server that delivered it.
    pub server: ServerId,
    /// The attempts that failed before it, in order.
    pub failures: Vec<ServerFailure>,
}

/// A verified local directory answer: what one server's last signed checkpoint state proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDirectoryAnswer {
    /// The answer as received (JSON), verifiable later with
    /// `sintra_services::directory::verify_local_lookup` (or `sintra client dir-verify`).
    pub json: Vec<u8>,
    /// What it states, and as of which signed state (log height, round, time).
    pub lookup: sintra_services::directory::LocalLookup,
    /// The server that delivered it.
    pub server: ServerId,
    /// The attempts that failed (or were too stale) before it, in order.
    pub failures: Vec<ServerFailure>,
}

/// How stale a local directory answer may be ([`Client::directory_get_local`]). A server
/// answers from its last signed checkpoint, and a faulty one can answer from an older one: the
/// signed log height and time bound how old. An idle group runs no rounds, so its last
/// checkpoint may be old yet current; a bound then refuses it and the ordered lookup is the
/// answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freshness {
    /// Refuse a state signed at a round time more than this long before this client's clock.
    pub max_age: Option<Duration>,
    /// Refuse a state covering fewer log entries than this (e.g. the position of a write the
    /// client saw).
    pub min_height: Option<u64>,
}

/// A verified kv answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOutcome {
    /// The store's answer: for a put the previous value, for a get the current one; or the
    /// service's (signed, deterministic) error.
    pub result: KvAnswer,
    /// The signed answer it was decoded from, and where it came from.
    pub submitted: Submitted,
}

/// One server as the client reaches it.
#[derive(Debug, Clone)]
struct Endpoint {
    id: ServerId,
    gateway: String,
}

/// A client of one group. Cheap to share between threads (`&Client` is enough: every request
/// opens its own connections).
#[derive(Debug, Clone)]
pub struct Client {
    keys: GroupKeys,
    servers: Vec<Endpoint>,
    options: ClientOptions,
}

/// The TDH2 label confidential requests are encrypted under (purpose `scabc/request`, instance
/// [`SCABC_INSTANCE`]): a ciphertext made for another group instance is refused by the servers.
pub fn confidential_label(instance: &InstanceId) -> sintra_crypto::Context<'_> {
    sintra_protocols::scabc::request_label(instance)
}

/// The instance id [`SCABC_INSTANCE`].
pub fn scabc_instance() -> Result<InstanceId, ClientError> {
    InstanceId::root("sintra")
        .and_then(|root| root.child("scabc"))
        .ok_or_else(|| ClientError::Encryption(format!("{SCABC_INSTANCE} is not an instance id")))
}

/// Encrypts an encoded request for the group's secure causal atomic broadcast.
pub fn encrypt_request(
    keys: &GroupKeys,
    request: &[u8],
    rng: &mut (impl rand::CryptoRng + RngCore),
) -> Result<Ciphertext, ClientError> {
    let instance = scabc_instance()?;
    keys.encryption
        .encrypt(&confidential_label(&instance), request, rng)
        .map_err(|error| ClientError::Encryption(error.to_string()))
}

impl Client {
    /// A client of the group in `group` with the default [`ClientOptions`].
    pub fn new(group: GroupFile) -> Result<Self, ClientError> {
        Self::with_options(group, ClientOptions::default())
    }

    /// A client of the group in `group`. The file is checked again (it may not come from
    /// [`GroupFile::load`]).
    pub fn with_options(group: GroupFile, options: ClientOptions) -> Result<Self, ClientError> {
        group.check().map_err(ClientError::Group)?;
        if let Some(first) = options.first_server
            && group.server(first).is_none()
        {
            return Err(ClientError::Group(format!(
                "{first} is not a member of the group (n = {})",
                group.servers.len()
            )));
        }
        if options.attempts == Some(0) {
            return Err(ClientError::Group("attempts must be at least 1".into()));
        }
        let servers = group
            .servers
            .iter()
            .map(|entry| Endpoint {
                id: entry.id,
                gateway: entry.gateway.clone(),
            })
            .collect();
        Ok(Self {
            keys: group.keys,
            servers,
            options,
        })
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The group's public keys (the service key among them).
    pub fn keys(&self) -> &GroupKeys {
        &self.keys
    }

    /// Submits an encoded service request (it carries its own nonce) and returns the first
    /// answer that verifies under the service key for it.
    pub fn submit(&self, request: &[u8]) -> Result<SignedAnswer, ClientError> {
        self.submit_detailed(request)
            .map(|submitted| submitted.answer)
    }

    /// [`Self::submit`], also saying which server answered and which attempts failed before.
    pub fn submit_detailed(&self, request: &[u8]) -> Result<Submitted, ClientError> {
        self.attempt("/v1/submit", request, request)
    }

    /// Submits an encoded service request confidentially: encrypted once (see the crate
    /// documentation), the same ciphertext to every server asked; the answer is checked against
    /// the plaintext `request`.
    pub fn submit_encrypted(&self, request: &[u8]) -> Result<Submitted, ClientError> {
        let ciphertext = encrypt_request(&self.keys, request, &mut rand::rngs::OsRng)?;
        self.attempt("/v1/submit?encrypt", &ciphertext.to_bytes(), request)
    }

    /// Stores `value` under `key`; the outcome holds the previous value.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<KvOutcome, ClientError> {
        self.kv(KvRequest::Put {
            nonce: fresh_nonce(),
            key: key.to_vec(),
            value: value.to_vec(),
        })
    }

    /// Reads the value under `key` (ordered like every request: the answer reflects every put
    /// ordered before it).
    pub fn get(&self, key: &[u8]) -> Result<KvOutcome, ClientError> {
        self.kv(KvRequest::Get {
            nonce: fresh_nonce(),
            key: key.to_vec(),
        })
    }

    fn kv(&self, request: KvRequest) -> Result<KvOutcome, ClientError> {
        let encoded = request
            .encode()
            .map_err(|error| ClientError::InvalidRequest(error.to_string()))?;
        let submitted = if self.options.encrypt {
            self.submit_encrypted(&encoded)?
        } else {
            self.submit_detailed(&encoded)?
        };
        let result = KvAnswer::decode(&submitted.answer.answer)
            .map_err(|error| ClientError::NotKvAnswer(error.to_string()))?;
        Ok(KvOutcome { result, submitted })
    }

    /// Time-stamps a document by its SHA-256 at the group's notary (RFC 3161, `POST /tsa`, or
    /// `POST /tsa?encrypt` with `encrypt`: the query is encrypted to the group and read only
    /// after its serial number is fixed). The reply is accepted only if it verifies under the
    /// service key for this query ([`sintra_services::notary::verify_reply`]).
    pub fn notarize(&self, sha256: &[u8; 32], encrypt: bool) -> Result<Notarized, ClientError> {
        let nonce = rand::thread_rng().next_u64();
        let query = sintra_services::notary::encode_query(sha256, nonce, true);
        let (target, body) = if encrypt {
            let request = sintra_services::notary::encode_request(&fresh_nonce(), &query);
            let ciphertext = encrypt_request(&self.keys, &request, &mut rand::rngs::OsRng)?;
            ("/tsa?encrypt", ciphertext.to_bytes())
        } else {
            ("/tsa", query.clone())
        };
        let key = &self.keys.service;
        let (reply, server, failures) =
            self.attempt_with(target, Method::Post, &body, &[200], |body| {
                let (serial, time) =
                    sintra_services::notary::verify_reply(body, sha256, nonce, key)
                        .map_err(|error| Failure::Rejected(error.to_string()))?;
                Ok((body.to_vec(), serial, time))
            })?;
        Ok(Notarized {
            query,
            reply: reply.0,
            serial: reply.1,
            time: reply.2,
            server,
            failures,
        })
    }

    /// Looks `key` up in the group's directory (an ordered lookup): the signed statement JSON,
    /// accepted only if it verifies under the service key and is about `key`.
    pub fn directory_get(&self, key: &str) -> Result<DirectoryAnswer, ClientError> {
        let target = format!("/dir/entries/{key}");
        self.directory(&target, Method::Get, &[], key)
    }

    /// Looks `key` up in the group's directory *locally*: one server answers at once from its
    /// last signed checkpoint state, without ordering and without a new signature. Accepted
    /// only if the proof verifies under the service key, is about `key`, and is as fresh as
    /// `freshness` demands; otherwise the next server is asked. The answer is true as of its
    /// state's log height, not necessarily now (see [`Freshness`]).
    pub fn directory_get_local(
        &self,
        key: &str,
        freshness: Freshness,
    ) -> Result<LocalDirectoryAnswer, ClientError> {
        let target = format!("/dir/entries/{key}?local");
        let service = &self.keys.service;
        let ((json, lookup), server, failures) =
            self.attempt_with(&target, Method::Get, &[], &[200, 404], |body| {
                let lookup = sintra_services::directory::verify_local_lookup(body, service)
                    .map_err(|error| Failure::Rejected(error.to_string()))?;
                if lookup.key != key {
                    return Err(Failure::Rejected(format!(
                        "a proof about {:?}, not {key:?}",
                        lookup.key
                    )));
                }
                check_freshness(&lookup.state, freshness, now_ms())?;
                Ok((body.to_vec(), lookup))
            })?;
        Ok(LocalDirectoryAnswer {
            json,
            lookup,
            server,
            failures,
        })
    }

    /// Creates or updates `key` in the directory with `body` (the JSON of
    /// `sintra_services::directory::PutBody`, signed by the entry's owner); the answer is the
    /// signed statement of the entry as written.
    pub fn directory_put(&self, key: &str, body: &[u8]) -> Result<DirectoryAnswer, ClientError> {
        let target = format!("/dir/entries/{key}");
        self.directory(&target, Method::Put, body, key)
    }

    fn directory(
        &self,
        target: &str,
        method: Method,
        body: &[u8],
        key: &str,
    ) -> Result<DirectoryAnswer, ClientError> {
        let service = &self.keys.service;
        // A 404 is an answer too: the directory signs absence.
        let ((json, lookup), server, failures) =
            self.attempt_with(target, method, body, &[200, 404], |body| {
                let lookup = sintra_services::directory::verify_lookup(body, service)
                    .map_err(|error| Failure::Rejected(error.to_string()))?;
                if lookup.key != key {
                    return Err(Failure::Rejected(format!(
                        "a statement about {:?}, not {key:?}",
                        lookup.key
                    )));
                }
                Ok((body.to_vec(), lookup))
            })?;
        Ok(DirectoryAnswer {
            json,
            lookup,
            server,
            failures,
        })
    }

    /// Sends `body` to `target` at one server after another until `verify` accepts an answer
    /// whose status is one of `accepted` (other statuses are failures).
    fn attempt_with<T>(
        &self,
        target: &str,
        method: Method,
        body: &[u8],
        accepted: &[u16],
        verify: impl Fn(&[u8]) -> Result<T, Failure>,
    ) -> Result<(T, ServerId, Vec<ServerFailure>), ClientError> {
        let n = self.servers.len();
        let first = match self.options.first_server {
            Some(id) => id.slot(),
            None => rand::thread_rng().gen_range(0..n),
        };
        let attempts = self.options.attempts.unwrap_or(n);
        let mut failures = Vec::new();
        for attempt in 0..attempts {
            let server = &self.servers[(first + attempt) % n];
            let method_name = match method {
                Method::Get => "GET",
                Method::Post => "POST",
                Method::Put => "PUT",
            };
            let outcome = http::request(
                &server.gateway,
                method_name,
                target,
                body,
                self.options.timeout,
            )
            .map_err(|error| match error {
                http::HttpError::Timeout(_) => Failure::Timeout,
                other => Failure::Transport(other.to_string()),
            })
            .and_then(|response| {
                if accepted.contains(&response.status) {
                    verify(&response.body)
                } else {
                    Err(Failure::Status {
                        status: response.status,
                        message: error_message(&response.body),
                    })
                }
            });
            match outcome {
                Ok(value) => return Ok((value, server.id, failures)),
                Err(failure) => failures.push(ServerFailure {
                    server: server.id,
                    gateway: server.gateway.clone(),
                    failure,
                }),
            }
        }
        Err(ClientError::NoVerifiedAnswer { failures })
    }

    /// Posts `body` to `target` at one server after another until an answer verifies for
    /// `request`.
    fn attempt(&self, target: &str, body: &[u8], request: &[u8]) -> Result<Submitted, ClientError> {
        let service = &self.keys.service;
        let (answer, server, failures) =
            self.attempt_with(target, Method::Post, body, &[200], |body| {
                let answer: SignedAnswer = serde_json::from_slice(body)
                    .map_err(|error| Failure::Undecodable(error.to_string()))?;
                answer
                    .verify(service, request)
                    .map_err(Failure::Unverified)?;
                Ok(answer)
            })?;
        Ok(Submitted {
            answer,
            server,
            failures,
        })
    }
}

/// Milliseconds since the Unix epoch by this machine's clock (0 if it is before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Whether a signed directory state is as fresh as `freshness` asks, at `now_ms`.
fn check_freshness(
    state: &sintra_services::directory::StateStatement,
    freshness: Freshness,
    now_ms: u64,
) -> Result<(), Failure> {
    if let Some(min_height) = freshness.min_height
        && state.height < min_height
    {
        return Err(Failure::Rejected(format!(
            "a state as of log height {}, older than the {min_height} asked for",
            state.height
        )));
    }
    if let Some(max_age) = freshness.max_age {
        let age_ms = now_ms.saturating_sub(state.time_ms);
        if u128::from(age_ms) > max_age.as_millis() {
            return Err(Failure::Rejected(format!(
                "a state signed {:.1} s ago (round time {}), older than the {:.1} s allowed",
                age_ms as f64 / 1000.0,
                state.time_ms,
                max_age.as_secs_f64()
            )));
        }
    }
    Ok(())
}

/// A fresh random request nonce.
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// The gateway's `{"error": "..."}` message, or the body as text, cut to
/// [`MESSAGE_BYTES_MAX`] bytes.
fn error_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text = if text.is_empty() {
        "(no message)".to_owned()
    } else {
        text
    };
    let mut end = text.len().min(MESSAGE_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests;
