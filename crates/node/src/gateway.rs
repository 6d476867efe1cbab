//! The client gateway: HTTP (`gateway_listen`) and a streaming TCP interface for load generators
//! (`stream_listen`).
//!
//! HTTP:
//! * `POST /v1/kv/put?key=K` (body: the value) and `GET /v1/kv/get?key=K` build a kv request with
//!   the client's `&nonce=<32 hex digits>`, or a fresh random nonce when it gives none; `POST /v1/submit` takes an encoded service request (the client made
//!   its own nonce). All three answer `200` with the `SignedAnswer` JSON once the request's
//!   round is executed and its signature combined. `POST /v1/submit?encrypt` takes a TDH2
//!   ciphertext (`Ciphertext::to_bytes`) of an encoded service request for secure causal atomic
//!   broadcast; the answer is the `SignedAnswer` of the plaintext (`400` for a ciphertext that
//!   does not decode or is not valid for the group: it is never ordered).
//! * `GET /health` → `{"server", "height", "log_digest", "round", "peers_connected",
//!   "catching_up"}`; `GET /metrics` → Prometheus text.
//! * Errors: `400` malformed input (with a message), `413` body over
//!   [`crate::Tunables::http_body_bytes_max`], `503` overload (queues full) or catching up (a
//!   checkpoint certificate shows this server too far behind to answer soon: the client should
//!   ask another server), `504` no answer within [`crate::Tunables::request_timeout`].
//!
//! Streaming: a TCP connection carries frames `[u32 length][u64 id][request]` from the client and
//! `[u32 length][u64 id][u8 status][payload]` back (big-endian; `length` counts what follows
//! it). A request is a full service request (tag, 16-byte nonce, body: what `POST /v1/submit`
//! takes, and what the service routes build, e.g. `notary::encode_request`). Status `0`:
//! payload is the `SignedAnswer` JSON (an answer the batch signature covers, as kv's); `5`: the
//! completed answer of a service that signs each answer on its own (`Service::complete`'s bytes,
//! what the service's HTTP route returns: a DER `TimeStampResp`, a PEM certificate, ...); `1`
//! overloaded, `2` malformed, `3` timeout, `4` stopping: payload is a UTF-8 message. Answers
//! come back in completion order (match them by `id`); at most [`STREAM_IN_FLIGHT_MAX`]
//! requests per connection are in flight, further frames are not read until one completes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::tdh2::Ciphertext;
use sintra_net::LinksHandle;
use sintra_services::answers::SignedAnswer;
use sintra_services::directory::SignedState;
use sintra_services::kv::{KvRequest, NONCE_BYTES};
use sintra_services::router::Router;
use sintra_services::{HttpReply, Service, ca, directory, notary, x509};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::ServiceFiles;
use crate::coordinator::{Answered, Register};
use crate::metrics::Metrics;
use crate::protocol::{Request, Submission, SubmitError};

/// Requests one streaming connection may have in flight.
pub const STREAM_IN_FLIGHT_MAX: usize = 4096;
/// Streaming connections served at once.
pub const STREAM_CONNECTIONS_MAX: usize = 256;
/// Streaming status of an answer the batch signature covers: the payload is its `SignedAnswer`
/// JSON.
pub const STREAM_STATUS_SIGNED_ANSWER: u8 = 0;
/// Streaming status of an answer its service signs on its own: the payload is the completed
/// answer (`Service::complete`), the bytes the service's HTTP route returns.
pub const STREAM_STATUS_COMPLETED: u8 = 5;
/// Answers queued for one streaming connection's writer.
const STREAM_WRITE_QUEUE_MAX: usize = 1024;
/// Bytes of a streaming connection read ahead at once (several small requests per read call).
const STREAM_READ_BUFFER_BYTES: usize = 64 << 10;
/// Answers waiting to be written are joined into writes of up to this many bytes (one system
/// call for many answers under load; one answer alone is written at once).
const STREAM_WRITE_COALESCE_BYTES: usize = 256 << 10;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub id: ServerId,
    pub submissions: mpsc::Sender<Submission>,
    pub registrations: mpsc::Sender<Register>,
    pub metrics: Arc<Metrics>,
    pub links: LinksHandle,
    pub timeout: Duration,
    pub request_bytes_max: usize,
    /// Test-only Byzantine replica ([`crate::Tunables`]): answers are altered before they leave.
    pub byzantine: bool,
    /// The services, to complete answers they sign one by one (`Service::complete`).
    pub services: Arc<Router>,
    /// The notary's and the CA's certificates (served as PEM).
    pub files: Arc<ServiceFiles>,
    /// The latest signed directory state (local lookups), `None` before the first.
    pub directory_state: watch::Receiver<Option<Arc<SignedState>>>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    Malformed(String),
    TooLarge(String),
    Overloaded(String),
    Timeout,
    Stopping,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Malformed(message) | Self::TooLarge(message) | Self::Overloaded(message) => {
                message.clone()
            }
            Self::Timeout => "no signed answer in time (the round may be stalled); retry, \
                              possibly at another server"
                .into(),
            Self::Stopping => "the server is shutting down".into(),
        }
    }

    fn stream_status(&self) -> u8 {
        match self {
            Self::Overloaded(_) => 1,
            Self::Malformed(_) | Self::TooLarge(_) => 2,
            Self::Timeout => 3,
            Self::Stopping => 4,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message() });
        (self.status(), axum::Json(body)).into_response()
    }
}

impl Gateway {
    /// Submits a request whose answer the batch signature covers (kv, and any answer its
    /// service does not sign on its own), waits for the `SignedAnswer`.
    pub(crate) async fn submit_batch(&self, request: Vec<u8>) -> Result<SignedAnswer, Failure> {
        let answered = self.submit(request).await?;
        self.batch_answer(answered)
    }

    /// Submits a client's TDH2 ciphertext of a request (secure causal atomic broadcast), waits
    /// for the `SignedAnswer` of the plaintext.
    pub(crate) async fn submit_confidential(&self, body: &[u8]) -> Result<SignedAnswer, Failure> {
        let answered = self.submit_confidential_answered(body).await?;
        self.batch_answer(answered)
    }

    /// Submits a TDH2 ciphertext of a service request (secure causal atomic broadcast), waits
    /// for the answer to the decrypted request.
    pub(crate) async fn submit_confidential_answered(
        &self,
        body: &[u8],
    ) -> Result<Answered, Failure> {
        if body.len() > self.request_bytes_max {
            return Err(Failure::TooLarge(format!(
                "ciphertext of {} bytes exceeds the maximum {}",
                body.len(),
                self.request_bytes_max
            )));
        }
        let ciphertext = Ciphertext::from_bytes(body)
            .map_err(|error| Failure::Malformed(format!("not a TDH2 ciphertext: {error}")))?;
        self.refuse_while_catching_up()?;
        let digest: [u8; 32] = Sha256::digest(ciphertext.to_bytes()).into();
        let (answer_tx, answer_rx) = oneshot::channel();
        let request = Request::Confidential {
            ciphertext: Box::new(ciphertext),
            digest,
            waiter: answer_tx,
        };
        self.wait(request, answer_rx).await
    }

    fn batch_answer(&self, answered: Answered) -> Result<SignedAnswer, Failure> {
        match answered {
            Answered::Batch(mut signed) => {
                if self.byzantine {
                    signed.answer.push(0x5a);
                }
                Ok(signed)
            }
            Answered::Signed { .. } => Err(Failure::Malformed(
                "the service signs this request's answer on its own; use the service's route"
                    .into(),
            )),
        }
    }

    /// Submits `request`, waits for its signed answer.
    pub(crate) async fn submit(&self, request: Vec<u8>) -> Result<Answered, Failure> {
        if request.is_empty() {
            return Err(Failure::Malformed("empty request".into()));
        }
        if request.len() > self.request_bytes_max {
            return Err(Failure::TooLarge(format!(
                "request of {} bytes exceeds the maximum {}",
                request.len(),
                self.request_bytes_max
            )));
        }
        self.refuse_while_catching_up()?;
        let digest: [u8; 32] = Sha256::digest(&request).into();
        let (answer_tx, answer_rx) = oneshot::channel();
        self.registrations
            .try_send(Register {
                digest,
                reply: answer_tx,
            })
            .map_err(|_| Failure::Overloaded("too many clients waiting".into()))?;
        self.wait(Request::Plain(request), answer_rx).await
    }

    /// A server that a checkpoint certificate shows far behind the group cannot answer before
    /// its state transfer is done: the client is told at once (`503`) and asks another server
    /// rather than wait out its timeout here.
    fn refuse_while_catching_up(&self) -> Result<(), Failure> {
        if self.metrics.catching_up.load(Ordering::Relaxed) {
            return Err(Failure::Overloaded(
                "this server is catching up with the group; ask another".into(),
            ));
        }
        Ok(())
    }

    /// Hands `request` to the protocol task, waits for its answer on `answer_rx`.
    async fn wait(
        &self,
        request: Request,
        answer_rx: oneshot::Receiver<Answered>,
    ) -> Result<Answered, Failure> {
        let (taken_tx, taken_rx) = oneshot::channel();
        self.submissions
            .try_send(Submission {
                request,
                reply: taken_tx,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    Failure::Overloaded("the submission queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => Failure::Stopping,
            })?;
        match taken_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(SubmitError::Overloaded(message))) => return Err(Failure::Overloaded(message)),
            Ok(Err(SubmitError::Invalid(message))) => return Err(Failure::Malformed(message)),
            Ok(Err(error @ SubmitError::TooLarge { .. })) => {
                return Err(Failure::TooLarge(error.to_string()));
            }
            Ok(Err(SubmitError::Stopping)) | Err(_) => return Err(Failure::Stopping),
        }
        match tokio::time::timeout(self.timeout, answer_rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // The coordinator dropped the waiter: it was full, or gave the round up.
            Ok(Err(_)) => Err(Failure::Overloaded(
                "the answer could not be collected".into(),
            )),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: String,
    /// The client's nonce (32 hex digits), so that it can rebuild its request and check the
    /// answer's leaf itself; the gateway draws one when absent.
    nonce: Option<String>,
}

fn nonce(given: Option<&str>) -> Result<[u8; NONCE_BYTES], Failure> {
    match given {
        Some(text) => {
            let mut nonce = [0; NONCE_BYTES];
            hex::decode_to_slice(text, &mut nonce).map_err(|_| {
                Failure::Malformed(format!("nonce must be {} hex digits", 2 * NONCE_BYTES))
            })?;
            Ok(nonce)
        }
        None => {
            let mut nonce = [0; NONCE_BYTES];
            rand::thread_rng().fill_bytes(&mut nonce);
            Ok(nonce)
        }
    }
}

async fn put(
    State(gateway): State<Gateway>,
    Query(query): Query<KeyQuery>,
    value: Bytes,
) -> Result<axum::Json<SignedAnswer>, Failure> {
    let request = KvRequest::Put {
        nonce: nonce(query.nonce.as_deref())?,
        key: query.key.into_bytes(),
        value: value.to_vec(),
    }
    .encode()
    .map_err(|error| Failure::Malformed(error.to_string()))?;
    gateway.submit_batch(request).await.map(axum::Json)
}

async fn get_key(
    State(gateway): State<Gateway>,
    Query(query): Query<KeyQuery>,
) -> Result<axum::Json<SignedAnswer>, Failure> {
    let request = KvRequest::Get {
        nonce: nonce(query.nonce.as_deref())?,
        key: query.key.into_bytes(),
    }
    .encode()
    .map_err(|error| Failure::Malformed(error.to_string()))?;
    gateway.submit_batch(request).await.map(axum::Json)
}

async fn submit(
    State(gateway): State<Gateway>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<axum::Json<SignedAnswer>, Response> {
    let encrypt = wants_encryption(query.as_deref());
    let answer = if encrypt {
        gateway.submit_confidential(&body).await
    } else {
        gateway.submit_batch(body.to_vec()).await
    };
    answer.map(axum::Json).map_err(IntoResponse::into_response)
}

#[derive(Debug, Serialize)]
struct Health {
    server: u16,
    height: u64,
    /// The chained digest of the log at `height` (hex): equal heights with equal digests mean
    /// identical logs.
    log_digest: String,
    round: u64,
    peers_connected: usize,
    /// Too far behind the group to answer clients (they get `503`); catching up.
    catching_up: bool,
}

async fn health(State(gateway): State<Gateway>) -> axum::Json<Health> {
    let links = gateway.links.metrics();
    let (height, log_digest) = gateway.metrics.log_head();
    axum::Json(Health {
        server: gateway.id.get(),
        height,
        log_digest: hex::encode(log_digest),
        round: gateway.metrics.next_round.load(Ordering::Relaxed),
        peers_connected: links.peers.iter().filter(|peer| peer.connected).count(),
        catching_up: gateway.metrics.catching_up.load(Ordering::Relaxed),
    })
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    let text = gateway.metrics.render(gateway.id, &gateway.links.metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// ---------------------------------------------------------------------------------------------
// The notary, the CA and the directory: each request is ordered, executed by every server, and
// its answer completed with the service key's own signature where the service asks for one.

impl Gateway {
    /// Submits a service request and turns its answer into the service's HTTP reply.
    async fn serve(&self, request: Vec<u8>, reply: fn(Vec<u8>) -> HttpReply) -> Response {
        self.reply(self.submit(request).await, reply)
    }

    /// The service's HTTP reply for an answer (or the failure to get one).
    fn reply(
        &self,
        answered: Result<Answered, Failure>,
        reply: fn(Vec<u8>) -> HttpReply,
    ) -> Response {
        let completed = match answered {
            Ok(Answered::Batch(signed)) => signed.answer,
            Ok(Answered::Signed {
                request,
                answer,
                signature,
            }) => self
                .services
                .complete(&request, &answer, signature.as_bytes()),
            Err(failure) => return failure.into_response(),
        };
        let mut reply = reply(completed);
        if self.byzantine && !reply.body.is_empty() {
            let last = reply.body.len() - 1;
            reply.body[last] ^= 0x01;
        }
        http_response(reply)
    }
}

fn http_response(reply: HttpReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

/// Whether a query string asks for confidential submission (`?encrypt`).
fn wants_encryption(query: Option<&str>) -> bool {
    has_flag(query, "encrypt")
}

/// Whether a query string names `flag` (`?flag`, `?flag=...`, `&flag`).
fn has_flag(query: Option<&str>, flag: &str) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|part| part.split('=').next() == Some(flag))
    })
}

fn not_configured(what: &str) -> Response {
    let body = serde_json::json!({
        "error": format!("this group serves no {what} (the group file names none)")
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

/// The bearer token of an `Authorization` header (empty when there is none).
fn bearer(headers: &HeaderMap) -> Vec<u8> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().as_bytes().to_vec())
        .unwrap_or_default()
}

fn pem_response(pem: String) -> Response {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
}

/// `POST /tsa`: an RFC 3161 `TimeStampReq` (DER) → `TimeStampResp`. A body that is no
/// time-stamp query is rejected (`badDataFormat`) at once, without being ordered.
/// `POST /tsa?encrypt`: the body is the TDH2 ciphertext of the whole notary request
/// (`notary::encode_request`, as `sintra client notarize --encrypt` makes it): no server reads
/// the query before its serial number is fixed.
async fn tsa(State(gateway): State<Gateway>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    if gateway.files.tsa_certificate.is_none() {
        return not_configured("notary");
    }
    if wants_encryption(query.as_deref()) {
        let answered = gateway.submit_confidential_answered(&body).await;
        return gateway.reply(answered, notary::http_reply);
    }
    if let Some(rejection) = notary::reject_malformed(&body) {
        return http_response(notary::http_reply(rejection));
    }
    let request = notary::encode_request(&fresh_nonce(), &body);
    gateway.serve(request, notary::http_reply).await
}

/// `GET /tsa/certificate.pem`: the notary's certificate followed by the root that issued it
/// (when the group has one), so that `openssl ts -verify -CAfile` needs this one file.
async fn tsa_certificate(State(gateway): State<Gateway>) -> Response {
    let Some(der) = &gateway.files.tsa_certificate else {
        return not_configured("notary");
    };
    let chain = std::iter::once(der).chain(gateway.files.ca.as_ref().map(|(root, _)| root));
    let mut pem = String::new();
    for der in chain {
        match x509::to_pem("CERTIFICATE", der) {
            Ok(text) => pem.push_str(&text),
            Err(error) => return Failure::Malformed(error.to_string()).into_response(),
        }
    }
    pem_response(pem)
}

fn ca_reply(completed: Vec<u8>) -> HttpReply {
    ca::http_reply(&completed)
}

/// `POST /ca/certificates`: a PKCS#10 request (PEM or DER), the registration token as
/// `Authorization: Bearer <token>` → the certificate (PEM) or a 4xx with the reason.
async fn ca_issue(State(gateway): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if gateway.files.ca.is_none() {
        return not_configured("certification authority");
    }
    let request = x509::csr_to_der(&body)
        .map_err(|error| Failure::Malformed(format!("certification request: {error}")))
        .and_then(|der| {
            ca::encode_issue(&fresh_nonce(), &bearer(&headers), &der)
                .map_err(|error| Failure::Malformed(error.to_string()))
        });
    match request {
        Ok(request) => gateway.serve(request, ca_reply).await,
        Err(failure) => failure.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct Revocation {
    serial: u64,
    /// An RFC 5280 reason name (`keyCompromise`, ...) or its code; `unspecified` when absent.
    reason: Option<String>,
}

/// `POST /ca/revocations`: JSON `{"serial": s, "reason": "keyCompromise"}` with the admin token
/// as `Authorization: Bearer <token>`.
async fn ca_revoke(State(gateway): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    if gateway.files.ca.is_none() {
        return not_configured("certification authority");
    }
    let request = serde_json::from_slice::<Revocation>(&body)
        .map_err(|error| Failure::Malformed(format!("revocation: {error}")))
        .and_then(|revocation| {
            let name = revocation.reason.as_deref().unwrap_or("unspecified");
            let reason = ca::reason_code(name)
                .ok_or_else(|| Failure::Malformed(format!("unknown revocation reason {name}")))?;
            ca::encode_revoke(&fresh_nonce(), &bearer(&headers), revocation.serial, reason)
                .map_err(|error| Failure::Malformed(error.to_string()))
        });
    match request {
        Ok(request) => gateway.serve(request, ca_reply).await,
        Err(failure) => failure.into_response(),
    }
}

/// `GET /ca/crl`: an ordered request; the CRL is current as of its position (its CRL number).
async fn ca_crl(State(gateway): State<Gateway>) -> Response {
    if gateway.files.ca.is_none() {
        return not_configured("certification authority");
    }
    gateway
        .serve(ca::encode_crl(&fresh_nonce()), ca_reply)
        .await
}

async fn ca_certificate(State(gateway): State<Gateway>) -> Response {
    match &gateway.files.ca {
        Some((der, _)) => match x509::to_pem("CERTIFICATE", der) {
            Ok(pem) => pem_response(pem),
            Err(error) => Failure::Malformed(error.to_string()).into_response(),
        },
        None => not_configured("certification authority"),
    }
}

/// `PUT /dir/entries/{key}`: JSON `{value, version, owner, signature}` (docs/services/directory.md).
async fn dir_put(State(gateway): State<Gateway>, Path(key): Path<String>, body: Bytes) -> Response {
    match directory::encode_put_json(&fresh_nonce(), &key, &body) {
        Ok(request) => gateway.serve(request, directory::http_reply).await,
        Err(error) => Failure::Malformed(error.to_string()).into_response(),
    }
}

/// `GET /dir/entries/{key}`: an ordered lookup, answered with the service's signed statement.
/// `GET /dir/entries/{key}?local`: answered here at once from the last signed checkpoint state
/// (a Merkle proof under its signed root; no ordering, no signature made), `503` before the
/// first checkpoint's state is signed.
async fn dir_get(
    State(gateway): State<Gateway>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if has_flag(query.as_deref(), "local") {
        let signed = gateway.directory_state.borrow().clone();
        let Some(signed) = signed else {
            let body = serde_json::json!({
                "error": "no signed directory state yet: local lookups are served once the \
                          state of a checkpoint is signed (every checkpoint_rounds rounds); \
                          use the ordered lookup (without ?local)"
            });
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        };
        let mut reply = signed.http_reply(&key);
        if gateway.byzantine
            && reply.status != 400
            && let Some(last) = reply.body.iter().rposition(u8::is_ascii_hexdigit)
        {
            reply.body[last] = if reply.body[last] == b'0' { b'1' } else { b'0' };
        }
        return http_response(reply);
    }
    match directory::encode_get(&fresh_nonce(), &key) {
        Ok(request) => gateway.serve(request, directory::http_reply).await,
        Err(error) => Failure::Malformed(error.to_string()).into_response(),
    }
}

/// The HTTP application.
pub(crate) fn router(gateway: Gateway, body_bytes_max: usize) -> axum::Router {
    axum::Router::new()
        .route("/v1/kv/put", post(put))
        .route("/v1/kv/get", get(get_key))
        .route("/v1/submit", post(submit))
        .route("/tsa", post(tsa))
        .route("/tsa/certificate.pem", get(tsa_certificate))
        .route("/ca/certificates", post(ca_issue))
        .route("/ca/revocations", post(ca_revoke))
        .route("/ca/crl", get(ca_crl))
        .route("/ca/certificate.pem", get(ca_certificate))
        .route("/dir/entries/{key}", get(dir_get).put(dir_put))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(gateway)
}

/// Serves HTTP until `shutdown` turns true.
pub(crate) async fn serve_http(
    listener: TcpListener,
    gateway: Gateway,
    body_bytes_max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(gateway, body_bytes_max);
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(%error, "the HTTP gateway stopped");
    }
}

/// Serves the streaming interface until `shutdown` turns true.
pub(crate) async fn serve_stream(
    listener: TcpListener,
    gateway: Gateway,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(STREAM_CONNECTIONS_MAX));
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, addr)) = accepted else { continue };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    debug!(%addr, "too many streaming connections; closed");
                    continue;
                };
                let gateway = gateway.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    stream_connection(stream, addr, gateway, shutdown).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn stream_connection(
    stream: TcpStream,
    addr: SocketAddr,
    gateway: Gateway,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::with_capacity(STREAM_READ_BUFFER_BYTES, reader);
    let (answers_tx, mut answers_rx) = mpsc::channel::<Vec<u8>>(STREAM_WRITE_QUEUE_MAX);
    let writer_task = tokio::spawn(async move {
        while let Some(mut bytes) = answers_rx.recv().await {
            // Whatever else is ready goes out in the same write.
            while bytes.len() < STREAM_WRITE_COALESCE_BYTES
                && let Ok(frame) = answers_rx.try_recv()
            {
                bytes.extend_from_slice(&frame);
            }
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX));
    let frame_max = gateway.request_bytes_max + 8;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut header = [0u8; 4];
        let read = tokio::select! {
            read = reader.read_exact(&mut header) => read,
            _ = shutdown.changed() => break,
        };
        if read.is_err() {
            break;
        }
        let len = u32::from_be_bytes(header) as usize;
        if !(8..=frame_max).contains(&len) {
            let message = format!("frame of {len} bytes: must be 8 to {frame_max}");
            let _ = answers_tx.send(response(0, 2, message.as_bytes())).await;
            warn!(%addr, len, "malformed streaming frame; connection closed");
            break;
        }
        let mut frame = vec![0; len];
        if reader.read_exact(&mut frame).await.is_err() {
            break;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&frame[..8]);
        let id = u64::from_be_bytes(id);
        let request = frame.split_off(8);
        let gateway = gateway.clone();
        let answers = answers_tx.clone();
        tokio::spawn(async move {
            let frame = match gateway.submit(request).await {
                Ok(Answered::Signed {
                    request,
                    answer,
                    signature,
                }) => {
                    let mut completed =
                        gateway
                            .services
                            .complete(&request, &answer, signature.as_bytes());
                    if gateway.byzantine
                        && let Some(last) = completed.last_mut()
                    {
                        *last ^= 0x01;
                    }
                    response(id, STREAM_STATUS_COMPLETED, &completed)
                }
                Ok(batch) => match gateway.batch_answer(batch) {
                    Ok(answer) => match serde_json::to_vec(&answer) {
                        Ok(json) => response(id, STREAM_STATUS_SIGNED_ANSWER, &json),
                        Err(error) => response(id, 4, error.to_string().as_bytes()),
                    },
                    Err(failure) => {
                        response(id, failure.stream_status(), failure.message().as_bytes())
                    }
                },
                Err(failure) => response(id, failure.stream_status(), failure.message().as_bytes()),
            };
            let _ = answers.send(frame).await;
            drop(permit);
        });
    }
    drop(answers_tx);
    let _ = writer_task.await;
}

fn response(id: u64, status: u8, payload: &[u8]) -> Vec<u8> {
    let len = 8 + 1 + payload.len();
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(status);
    frame.extend_from_slice(payload);
    frame
}
