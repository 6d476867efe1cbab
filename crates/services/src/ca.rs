//! The certification authority: PKCS#10 requests in, X.509 certificates out, signed by the
//! threshold-RSA service key under a stated issuing policy, plus revocation and a CRL
//! (docs/services/ca.md).
//!
//! Every server executes the same ordered requests and builds the same `TBSCertificate` (or
//! `TBSCertList`) bytes; [`Service::signing_message`] hands those bytes to the service key, and
//! [`Service::complete`] wraps the combined signature into the PEM certificate or CRL, which
//! `openssl verify -CAfile ca-certificate.pem` accepts.
//!
//! Encodings (big-endian integers):
//! - issue: `[0x20][nonce 16][token_len u16][token][csr_len u32][csr DER]`
//! - revoke: `[0x21][nonce 16][token_len u16][token][serial u64][reason u8]`
//! - CRL: `[0x22][nonce 16]`
//! - answers: `[0x00][TBSCertificate DER]` and `[0x01][TBSCertList DER]` (the service key signs
//!   the DER after the tag), `[0x02][text utf-8]` for a revocation done,
//!   `[0x03][status u16][reason utf-8]` for a refusal (status 400, 403, 404, 409 or 503).
//! - completed answers: the PEM certificate or CRL for the first two, the answer itself for
//!   the others; [`http_reply`] maps them to HTTP.
//! - snapshot: `"sintra/ca/v1" ‖ time_ms_max u64 ‖ issued_count u64 ‖ issued serials u64
//!   (strictly increasing) ‖ revoked_count u64 ‖ revoked_count × (serial u64, time_ms u64,
//!   reason u8)` with serials strictly increasing, every revoked serial an issued one.
//!
//! Rules: the serial of a certificate is its request's 1-based position in the total order
//! (`position + 1`), so serials are unique and increase with the log. Times are the agreed
//! round time, never going backwards (the state keeps the largest time used). A CRL is current
//! as of the log position it states: its `cRLNumber` is `position + 1` of the CRL request, and
//! it lists every revocation ordered before it.

use std::collections::{BTreeMap, BTreeSet};

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc4519, rfc5280, rfc5912};
use der::asn1::Uint;
use der::{Decode, Encode, Tag, Tagged};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::signature::Verifier;
use rsa::signature::hazmat::PrehashVerifier;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::crl::{RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, CrlNumber, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::name::Name;
use x509_cert::request::CertReq;
use x509_cert::serial_number::SerialNumber;

use crate::x509::{self, KEY_IDENTIFIER_BYTES, SECONDS_PER_DAY, X509Error};
use crate::{ExecutionContext, HttpReply, REQUEST_NONCE_BYTES, Service, ServiceError};

/// Tag of an issue request.
pub const TAG_ISSUE: u8 = 0x20;
/// Tag of a revocation request.
pub const TAG_REVOKE: u8 = 0x21;
/// Tag of a CRL request.
pub const TAG_CRL: u8 = 0x22;
/// Bytes of a registration or admin token, at most.
pub const TOKEN_BYTES_MAX: usize = 256;
/// Bytes of a PKCS#10 request (DER), at most (16 KiB: a 4096-bit RSA request with many names
/// is under 4 KiB).
pub const CSR_BYTES_MAX: usize = 16 << 10;
/// Bytes of an encoded request, at most: an issue request of the longest token and request.
pub const REQUEST_BYTES_MAX: usize =
    1 + REQUEST_NONCE_BYTES + 2 + TOKEN_BYTES_MAX + 4 + CSR_BYTES_MAX;
/// Certificates the CA issues in its lifetime, at most, whatever the policy says (its state
/// keeps every issued serial: 8 MiB of snapshot at this bound).
pub const CERTIFICATES_MAX: u64 = 1 << 20;
/// Revocations the CA records, at most, whatever the policy says (every one is listed in
/// every CRL: about 2.5 MiB of CRL at this bound).
pub const REVOCATIONS_MAX: u64 = 1 << 16;
/// Validity of an issued certificate, at most (ten years).
pub const VALIDITY_DAYS_MAX: u32 = 3650;
/// Name rules in a policy, at most.
pub const NAME_RULES_MAX: usize = 1024;
/// Approved keys of one name rule, at most.
pub const APPROVED_KEYS_MAX: usize = 4096;
/// DNS names in one certificate (its CN and subject alternative names), at most.
pub const NAMES_PER_CERTIFICATE_MAX: usize = 100;
/// Bytes of a DNS name, at most (RFC 1035).
pub const DNS_NAME_BYTES_MAX: usize = 253;
/// The smallest RSA key a policy may allow.
pub const RSA_BITS_MIN: u32 = 2048;
/// The largest RSA key the CA verifies (bounds the cost of checking a request's signature).
pub const RSA_BITS_MAX: u32 = 4096;
/// How long a CRL is current: `nextUpdate = thisUpdate + CRL_VALIDITY_S`.
pub const CRL_VALIDITY_S: u64 = SECONDS_PER_DAY;
/// Bytes of a refusal's reason, at most (longer texts are cut at a character boundary).
pub const REASON_BYTES_MAX: usize = 1 << 10;

/// Answer tag: a `TBSCertificate` to sign.
pub const ANSWER_CERTIFICATE: u8 = 0x00;
/// Answer tag: a `TBSCertList` to sign.
pub const ANSWER_CRL: u8 = 0x01;
/// Answer tag: a request done, with a text.
pub const ANSWER_DONE: u8 = 0x02;
/// Answer tag: a refusal, with a status and a reason.
pub const ANSWER_REFUSED: u8 = 0x03;

const SNAPSHOT_MAGIC: &[u8] = b"sintra/ca/v1";
/// Revocation reasons (RFC 5280 §5.3.1 `CRLReason`) a revocation may state. Hold (6) and
/// removeFromCRL (8) are not offered: a revocation here is final.
const REASONS_ALLOWED: [(u8, &str); 7] = [
    (0, "unspecified"),
    (1, "keyCompromise"),
    (2, "cACompromise"),
    (3, "affiliationChanged"),
    (4, "superseded"),
    (5, "cessationOfOperation"),
    (9, "privilegeWithdrawn"),
];

// ---------------------------------------------------------------------------------------------
// Policy

/// The issuing policy, read from `ca-policy.toml` (docs/services/ca.md §Policy). Every server
/// must load the same policy: it decides answers, so servers with different policies diverge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaPolicy {
    /// Validity of an issued certificate in days, `1..=VALIDITY_DAYS_MAX`.
    pub validity_days: u32,
    /// Certificates the CA issues, at most (`1..=CERTIFICATES_MAX`); beyond, it refuses.
    #[serde(default = "default_certificates_max")]
    pub certificates_max: u64,
    /// Revocations the CA records, at most (`1..=REVOCATIONS_MAX`).
    #[serde(default = "default_revocations_max")]
    pub revocations_max: u64,
    /// SHA-256 (64 hex digits) of the admin token that authorizes revocations.
    pub admin_token_sha256: String,
    /// Which subject keys are accepted.
    #[serde(default)]
    pub keys: KeyPolicy,
    /// Which names may be certified and who may ask; a name no rule matches is refused.
    pub names: Vec<NameRule>,
}

fn default_certificates_max() -> u64 {
    100_000
}

fn default_revocations_max() -> u64 {
    10_000
}

/// Which subject keys are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// The smallest RSA modulus in bits (`RSA_BITS_MIN..=RSA_BITS_MAX`); `0` refuses RSA.
    #[serde(default = "default_rsa_bits_min")]
    pub rsa_bits_min: u32,
    /// The elliptic curves accepted for ECDSA keys: `"P-256"`, `"P-384"`.
    #[serde(default = "default_ec_curves")]
    pub ec_curves: Vec<Curve>,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            rsa_bits_min: default_rsa_bits_min(),
            ec_curves: default_ec_curves(),
        }
    }
}

fn default_rsa_bits_min() -> u32 {
    RSA_BITS_MIN
}

fn default_ec_curves() -> Vec<Curve> {
    vec![Curve::P256, Curve::P384]
}

/// An elliptic curve for ECDSA subject keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (secp384r1).
    #[serde(rename = "P-384")]
    P384,
}

/// Who may have names matching `pattern` certified: the holder of a registration token, or
/// (in place of or besides a token) the holders of approved keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRule {
    /// An exact DNS name (`www.example.test`) or `*.` and a DNS name (`*.example.test`: any
    /// name below `example.test`, at any depth, not `example.test` itself). Case-insensitive.
    pub pattern: String,
    /// SHA-256 (64 hex digits) of the registration token that authorizes these names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token_sha256: Option<String>,
    /// SHA-256 (64 hex digits) of the `SubjectPublicKeyInfo` DER of keys approved for these
    /// names: a request for such a key needs no token (the approval list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_keys_sha256: Vec<String>,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML of the policy's shape.
    #[error("policy: {0}")]
    Parse(String),
    /// Parsed, but a value is out of range.
    #[error("policy: {0}")]
    Invalid(String),
}

fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

impl CaPolicy {
    /// Parses and [checks](Self::check) a policy file's text.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Self =
            toml::from_str(text).map_err(|error| PolicyError::Parse(error.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    /// The policy as TOML (what the dealer writes).
    pub fn to_toml(&self) -> Result<String, PolicyError> {
        toml::to_string(self).map_err(|error| PolicyError::Parse(error.to_string()))
    }

    /// A policy that lets the holder of `token` have names matching `pattern` certified and
    /// revoke, with the default limits: what `sintra keygen` writes.
    pub fn with_token(pattern: &str, token: &[u8], validity_days: u32) -> Self {
        let digest = hex::encode(Sha256::digest(token));
        Self {
            validity_days,
            certificates_max: default_certificates_max(),
            revocations_max: default_revocations_max(),
            admin_token_sha256: digest.clone(),
            keys: KeyPolicy::default(),
            names: vec![NameRule {
                pattern: pattern.to_owned(),
                registration_token_sha256: Some(digest),
                approved_keys_sha256: Vec::new(),
            }],
        }
    }

    /// Checks every bound: validity, maxima, key sizes, digests that are 64 hex digits,
    /// patterns that are DNS names (optionally behind `*.`), a rule that authorizes someone.
    pub fn check(&self) -> Result<(), PolicyError> {
        let invalid = |message: String| Err(PolicyError::Invalid(message));
        if !(1..=VALIDITY_DAYS_MAX).contains(&self.validity_days) {
            return invalid(format!(
                "validity_days {} is outside 1..={VALIDITY_DAYS_MAX}",
                self.validity_days
            ));
        }
        if !(1..=CERTIFICATES_MAX).contains(&self.certificates_max) {
            return invalid(format!(
                "certificates_max {} is outside 1..={CERTIFICATES_MAX}",
                self.certificates_max
            ));
        }
        if !(1..=REVOCATIONS_MAX).contains(&self.revocations_max) {
            return invalid(format!(
                "revocations_max {} is outside 1..={REVOCATIONS_MAX}",
                self.revocations_max
            ));
        }
        if parse_sha256_hex(&self.admin_token_sha256).is_none() {
            return invalid("admin_token_sha256 is not 64 hex digits".into());
        }
        let rsa = self.keys.rsa_bits_min;
        if rsa != 0 && !(RSA_BITS_MIN..=RSA_BITS_MAX).contains(&rsa) {
            return invalid(format!(
                "keys.rsa_bits_min {rsa} is neither 0 (no RSA) nor in {RSA_BITS_MIN}..={RSA_BITS_MAX}"
            ));
        }
        if self.names.is_empty() || self.names.len() > NAME_RULES_MAX {
            return invalid(format!(
                "{} name rules; a policy has 1..={NAME_RULES_MAX}",
                self.names.len()
            ));
        }
        for rule in &self.names {
            let base = rule.pattern.strip_prefix("*.").unwrap_or(&rule.pattern);
            if !is_dns_name(&base.to_ascii_lowercase()) {
                return invalid(format!(
                    "pattern {:?} is neither a DNS name nor *. and a DNS name",
                    rule.pattern
                ));
            }
            if rule
                .registration_token_sha256
                .as_deref()
                .is_some_and(|digest| parse_sha256_hex(digest).is_none())
            {
                return invalid(format!(
                    "pattern {:?}: registration_token_sha256 is not 64 hex digits",
                    rule.pattern
                ));
            }
            if rule.approved_keys_sha256.len() > APPROVED_KEYS_MAX
                || rule
                    .approved_keys_sha256
                    .iter()
                    .any(|digest| parse_sha256_hex(digest).is_none())
            {
                return invalid(format!(
                    "pattern {:?}: approved_keys_sha256 holds more than {APPROVED_KEYS_MAX} \
                     entries or one that is not 64 hex digits",
                    rule.pattern
                ));
            }
            if rule.registration_token_sha256.is_none() && rule.approved_keys_sha256.is_empty() {
                return invalid(format!(
                    "pattern {:?} has neither a registration token nor approved keys",
                    rule.pattern
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` is a lower-case DNS host name: dot-separated labels of `a-z`, `0-9` and
/// inner `-`, 1 to 63 bytes each, at most [`DNS_NAME_BYTES_MAX`] bytes in all, at least two
/// labels. A wildcard (`*`) is not a host name: the CA does not issue wildcard certificates.
pub fn is_dns_name(name: &str) -> bool {
    name.len() <= DNS_NAME_BYTES_MAX
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A policy with its digests decoded, ready for requests.
#[derive(Debug, Clone)]
struct Rules {
    admin_token: [u8; 32],
    names: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    /// `Exact("www.example.test")` or `Below(".example.test")`.
    pattern: Pattern,
    token: Option<[u8; 32]>,
    approved_keys: BTreeSet<[u8; 32]>,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    /// The suffix with its leading dot.
    Below(String),
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => name == exact,
            Pattern::Below(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
        }
    }
}

impl Rules {
    fn compile(policy: &CaPolicy) -> Result<Self, PolicyError> {
        policy.check()?;
        let admin_token = parse_sha256_hex(&policy.admin_token_sha256)
            .ok_or_else(|| PolicyError::Invalid("admin_token_sha256".into()))?;
        let mut names = Vec::with_capacity(policy.names.len());
        for rule in &policy.names {
            let lower = rule.pattern.to_ascii_lowercase();
            let pattern = match lower.strip_prefix('*') {
                Some(suffix) => Pattern::Below(suffix.to_owned()),
                None => Pattern::Exact(lower),
            };
            names.push(CompiledRule {
                pattern,
                token: rule
                    .registration_token_sha256
                    .as_deref()
                    .and_then(parse_sha256_hex),
                approved_keys: rule
                    .approved_keys_sha256
                    .iter()
                    .filter_map(|digest| parse_sha256_hex(digest))
                    .collect(),
            });
        }
        Ok(Self { admin_token, names })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRequest {
    /// Certify the subject and DNS names of a PKCS#10 request.
    Issue {
        /// The registration token (may be empty when the key is on an approval list).
        token: Vec<u8>,
        /// The PKCS#10 request, DER.
        csr_der: Vec<u8>,
    },
    /// Revoke an issued certificate.
    Revoke {
        /// The admin token.
        token: Vec<u8>,
        /// The certificate's serial.
        serial: u64,
        /// The RFC 5280 `CRLReason` code.
        reason: u8,
    },
    /// The current CRL.
    Crl,
}

/// Why a request could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field longer than its maximum.
    #[error("{what} of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Its maximum.
        max: usize,
    },
    /// A revocation reason the CA does not offer.
    #[error("revocation reason {0} is not offered (allowed: 0-5, 9)")]
    Reason(u8),
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooLong { what, len, max });
    }
    Ok(())
}

/// Encodes an issue request (`csr_der`: see [`x509::csr_to_der`] for a PEM body).
pub fn encode_issue(
    nonce: &[u8; REQUEST_NONCE_BYTES],
    token: &[u8],
    csr_der: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    check_len("token", token.len(), TOKEN_BYTES_MAX)?;
    check_len("certification request", csr_der.len(), CSR_BYTES_MAX)?;
    let mut out = Vec::with_capacity(1 + REQUEST_NONCE_BYTES + 6 + token.len() + csr_der.len());
    out.push(TAG_ISSUE);
    out.extend_from_slice(nonce);
    // Both lengths were checked against maxima far below the prefix widths.
    out.extend_from_slice(&(token.len() as u16).to_be_bytes());
    out.extend_from_slice(token);
    out.extend_from_slice(&(csr_der.len() as u32).to_be_bytes());
    out.extend_from_slice(csr_der);
    Ok(out)
}

/// Encodes a revocation request; `reason` is an RFC 5280 `CRLReason` code (see
/// [`reason_code`] for the names).
pub fn encode_revoke(
    nonce: &[u8; REQUEST_NONCE_BYTES],
    token: &[u8],
    serial: u64,
    reason: u8,
) -> Result<Vec<u8>, EncodeError> {
    check_len("token", token.len(), TOKEN_BYTES_MAX)?;
    if reason_name(reason).is_none() {
        return Err(EncodeError::Reason(reason));
    }
    let mut out = Vec::with_capacity(1 + REQUEST_NONCE_BYTES + 2 + token.len() + 9);
    out.push(TAG_REVOKE);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&(token.len() as u16).to_be_bytes());
    out.extend_from_slice(token);
    out.extend_from_slice(&serial.to_be_bytes());
    out.push(reason);
    Ok(out)
}

/// Encodes a CRL request.
pub fn encode_crl(nonce: &[u8; REQUEST_NONCE_BYTES]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + REQUEST_NONCE_BYTES);
    out.push(TAG_CRL);
    out.extend_from_slice(nonce);
    out
}

/// The `CRLReason` code of a reason's RFC 5280 name (`"keyCompromise"`, ...) or decimal code,
/// if the CA offers it (hold and removeFromCRL are not offered).
pub fn reason_code(name: &str) -> Option<u8> {
    REASONS_ALLOWED
        .iter()
        .find(|(code, known)| *known == name || code.to_string() == name)
        .map(|(code, _)| *code)
}

/// The RFC 5280 name of an offered reason code.
pub fn reason_name(code: u8) -> Option<&'static str> {
    REASONS_ALLOWED
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, name)| *name)
}

/// Reads an encoding front to back; every read checks the remaining length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() < len {
            return Err(format!("truncated {what}"));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut out = [0u8; 8];
        out.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(out))
    }

    fn bytes_u16(&mut self, what: &str, max: usize) -> Result<&'a [u8], String> {
        let mut len = [0u8; 2];
        len.copy_from_slice(self.take(2, what)?);
        let len = usize::from(u16::from_be_bytes(len));
        if len > max {
            return Err(format!(
                "{what} of {len} bytes exceeds the maximum of {max}"
            ));
        }
        self.take(len, what)
    }

    fn bytes_u32(&mut self, what: &str, max: usize) -> Result<&'a [u8], String> {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.take(4, what)?);
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > max {
            return Err(format!(
                "{what} of {len} bytes exceeds the maximum of {max}"
            ));
        }
        self.take(len, what)
    }

    fn finish(self) -> Result<(), String> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(format!("{count} trailing bytes")),
        }
    }
}

/// Decodes a request; the error text is the reason of a 400 answer.
pub fn decode_request(bytes: &[u8]) -> Result<CaRequest, String> {
    if bytes.len() > REQUEST_BYTES_MAX {
        return Err(format!(
            "request of {} bytes exceeds the maximum of {REQUEST_BYTES_MAX}",
            bytes.len()
        ));
    }
    let mut reader = Reader { bytes };
    let tag = reader.u8("tag")?;
    reader.take(REQUEST_NONCE_BYTES, "nonce")?;
    let request = match tag {
        TAG_ISSUE => {
            let token = reader.bytes_u16("token", TOKEN_BYTES_MAX)?.to_vec();
            let csr_der = reader
                .bytes_u32("certification request", CSR_BYTES_MAX)?
                .to_vec();
            CaRequest::Issue { token, csr_der }
        }
        TAG_REVOKE => {
            let token = reader.bytes_u16("token", TOKEN_BYTES_MAX)?.to_vec();
            let serial = reader.u64("serial")?;
            let reason = reader.u8("reason")?;
            if reason_name(reason).is_none() {
                return Err(format!(
                    "revocation reason {reason} is not offered (allowed: 0-5, 9)"
                ));
            }
            CaRequest::Revoke {
                token,
                serial,
                reason,
            }
        }
        TAG_CRL => CaRequest::Crl,
        other => return Err(format!("unknown CA request tag {other:#04x}")),
    };
    reader.finish()?;
    Ok(request)
}

// ---------------------------------------------------------------------------------------------
// Answers

/// A refusal: an HTTP status and the reason, deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400 malformed, 403 not authorized or outside the policy, 404 unknown serial,
    /// 409 already revoked or serial taken, 503 no agreed time yet.
    pub status: u16,
    /// Why, as text.
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    fn malformed(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }

    fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(403, reason)
    }

    /// `[0x03][status u16][reason]`, the reason cut to [`REASON_BYTES_MAX`].
    fn encode(&self) -> Vec<u8> {
        let mut reason = self.reason.as_str();
        if reason.len() > REASON_BYTES_MAX {
            let mut end = REASON_BYTES_MAX;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let mut out = Vec::with_capacity(3 + reason.len());
        out.push(ANSWER_REFUSED);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
        out
    }
}

impl From<X509Error> for Refusal {
    fn from(error: X509Error) -> Self {
        Refusal::malformed(error.to_string())
    }
}

/// A decoded answer (or completed answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaAnswer {
    /// A `TBSCertificate` the service key signs.
    Certificate(Vec<u8>),
    /// A `TBSCertList` the service key signs.
    Crl(Vec<u8>),
    /// A request done.
    Done(String),
    /// A refusal.
    Refused(Refusal),
}

/// Decodes an answer of [`Ca::execute`] (not a completed one).
pub fn decode_answer(answer: &[u8]) -> Option<CaAnswer> {
    let (&tag, rest) = answer.split_first()?;
    match tag {
        ANSWER_CERTIFICATE => Some(CaAnswer::Certificate(rest.to_vec())),
        ANSWER_CRL => Some(CaAnswer::Crl(rest.to_vec())),
        ANSWER_DONE => Some(CaAnswer::Done(std::str::from_utf8(rest).ok()?.to_owned())),
        ANSWER_REFUSED => {
            let status = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
            let reason = std::str::from_utf8(rest.get(2..)?).ok()?.to_owned();
            Some(CaAnswer::Refused(Refusal { status, reason }))
        }
        _ => None,
    }
}

/// How the gateway answers an HTTP client with a completed answer ([`Service::complete`]'s
/// output): 200 `application/x-pem-file` for a certificate or CRL, 200 `text/plain` for a
/// revocation done, the refusal's 4xx (or 503) `text/plain` with its reason otherwise.
pub fn http_reply(completed: &[u8]) -> HttpReply {
    if completed.starts_with(b"-----BEGIN ") {
        return HttpReply {
            status: 200,
            content_type: "application/x-pem-file",
            body: completed.to_vec(),
        };
    }
    let text = |status, body: String| HttpReply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into_bytes(),
    };
    match decode_answer(completed) {
        Some(CaAnswer::Done(message)) => text(200, message + "\n"),
        Some(CaAnswer::Refused(refusal)) => text(refusal.status, refusal.reason + "\n"),
        // A to-be-signed answer is never handed out incomplete.
        _ => text(
            500,
            "the certification authority gave no complete answer\n".into(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The service

/// Why a CA could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The root certificate does not parse or lacks what the CA needs.
    #[error("root certificate: {0}")]
    Root(String),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// One revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revocation {
    time_ms: u64,
    reason: u8,
}

/// The replicated state: what the snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CaState {
    /// The largest agreed time used, so time never goes backwards.
    time_ms_max: u64,
    /// Every serial issued.
    issued: BTreeSet<u64>,
    /// Every revoked serial, with when and why.
    revoked: BTreeMap<u64, Revocation>,
}

/// The certification authority service.
#[derive(Debug, Clone)]
pub struct Ca {
    policy: CaPolicy,
    rules: Rules,
    /// The root's subject: the issuer of every certificate and CRL.
    issuer: Name,
    /// The root key's identifier, for authority key identifiers.
    issuer_key_identifier: [u8; KEY_IDENTIFIER_BYTES],
    state: CaState,
}

impl Ca {
    /// A CA issuing under the root certificate `root_certificate_der` (the dealer's
    /// `ca-certificate.pem`, as DER) with `policy`, with nothing issued yet.
    pub fn new(root_certificate_der: &[u8], policy: CaPolicy) -> Result<Ca, CaError> {
        let root = Certificate::from_der(root_certificate_der)
            .map_err(|error| CaError::Root(error.to_string()))?;
        let issuer = root.tbs_certificate.subject.clone();
        let issuer_key_identifier =
            x509::key_identifier_of(&root.tbs_certificate.subject_public_key_info);
        let rules = Rules::compile(&policy)?;
        Ok(Ca {
            policy,
            rules,
            issuer,
            issuer_key_identifier,
            state: CaState::default(),
        })
    }

    /// The policy the CA issues under.
    pub fn policy(&self) -> &CaPolicy {
        &self.policy
    }

    /// Serials issued so far.
    pub fn issued_count(&self) -> usize {
        self.state.issued.len()
    }

    /// The agreed time to use now: never before the last one used, and not unknown.
    fn now_ms(&mut self, context: &ExecutionContext) -> Result<u64, Refusal> {
        let now = context.time_ms.max(self.state.time_ms_max);
        if now == 0 {
            return Err(Refusal::new(
                503,
                "no agreed time yet; retry after the next round",
            ));
        }
        Ok(now)
    }

    fn execute_request(
        &mut self,
        context: &ExecutionContext,
        request: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        match decode_request(request).map_err(Refusal::malformed)? {
            CaRequest::Issue { token, csr_der } => self.issue(context, &token, &csr_der),
            CaRequest::Revoke {
                token,
                serial,
                reason,
            } => self.revoke(context, &token, serial, reason),
            CaRequest::Crl => self.crl(context),
        }
    }

    fn issue(
        &mut self,
        context: &ExecutionContext,
        token: &[u8],
        csr_der: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let request = CheckedRequest::parse(csr_der, &self.policy.keys)?;
        self.authorize(&request, token)?;
        if self.state.issued.len() as u64 >= self.policy.certificates_max {
            return Err(Refusal::forbidden(format!(
                "the CA has issued its maximum of {} certificates",
                self.policy.certificates_max
            )));
        }
        let serial = context
            .position
            .checked_add(1)
            .ok_or_else(|| Refusal::forbidden("no serial is left for this log position"))?;
        if self.state.issued.contains(&serial) {
            return Err(Refusal::new(
                409,
                format!("serial {serial} is already used"),
            ));
        }
        let now_ms = self.now_ms(context)?;
        let not_before_s = now_ms / 1000;
        let not_after_s = not_before_s + u64::from(self.policy.validity_days) * SECONDS_PER_DAY;

        let mut extensions = vec![
            x509::extension(
                true,
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
            )?,
            x509::extension(
                true,
                &KeyUsage(if request.is_rsa {
                    KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
                } else {
                    KeyUsages::DigitalSignature.into()
                }),
            )?,
            x509::extension(
                false,
                &ExtendedKeyUsage(vec![rfc5280::ID_KP_SERVER_AUTH, rfc5280::ID_KP_CLIENT_AUTH]),
            )?,
            x509::subject_key_identifier(&request.public_key)?,
            x509::authority_key_identifier(&self.issuer_key_identifier)?,
        ];
        extensions.push(x509::dns_subject_alt_name(&request.names)?);
        let tbs = x509::tbs_certificate(&x509::TbsFields {
            serial_be: serial.to_be_bytes().to_vec(),
            issuer: self.issuer.clone(),
            subject: request.subject,
            not_before_s,
            not_after_s,
            subject_public_key_info: request.public_key,
            extensions,
        })?;
        self.state.issued.insert(serial);
        self.state.time_ms_max = now_ms;
        let mut answer = Vec::with_capacity(1 + tbs.len());
        answer.push(ANSWER_CERTIFICATE);
        answer.extend_from_slice(&tbs);
        Ok(answer)
    }

    /// Every name of the request must match a rule that the token or the key satisfies.
    fn authorize(&self, request: &CheckedRequest, token: &[u8]) -> Result<(), Refusal> {
        let token_digest: [u8; 32] = Sha256::digest(token).into();
        let key_digest: [u8; 32] = Sha256::digest(&request.public_key_der).into();
        for name in &request.names {
            let mut matched = false;
            let mut allowed = false;
            for rule in self
                .rules
                .names
                .iter()
                .filter(|rule| rule.pattern.matches(name))
            {
                matched = true;
                allowed |=
                    rule.token == Some(token_digest) || rule.approved_keys.contains(&key_digest);
            }
            if !matched {
                return Err(Refusal::forbidden(format!(
                    "the name {name} is outside the CA's policy"
                )));
            }
            if !allowed {
                return Err(Refusal::forbidden(format!(
                    "not authorized for {name}: wrong registration token and the key is not approved"
                )));
            }
        }
        Ok(())
    }

    fn revoke(
        &mut self,
        context: &ExecutionContext,
        token: &[u8],
        serial: u64,
        reason: u8,
    ) -> Result<Vec<u8>, Refusal> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        if digest != self.rules.admin_token {
            return Err(Refusal::forbidden("wrong admin token"));
        }
        if !self.state.issued.contains(&serial) {
            return Err(Refusal::new(
                404,
                format!("serial {serial} was not issued by this CA"),
            ));
        }
        if self.state.revoked.contains_key(&serial) {
            return Err(Refusal::new(
                409,
                format!("serial {serial} is already revoked"),
            ));
        }
        if self.state.revoked.len() as u64 >= self.policy.revocations_max {
            return Err(Refusal::forbidden(format!(
                "the CA has recorded its maximum of {} revocations",
                self.policy.revocations_max
            )));
        }
        let now_ms = self.now_ms(context)?;
        self.state.revoked.insert(
            serial,
            Revocation {
                time_ms: now_ms,
                reason,
            },
        );
        self.state.time_ms_max = now_ms;
        let message = format!(
            "revoked serial {serial} ({}) at {now_ms} ms, log position {}",
            reason_name(reason).unwrap_or("unspecified"),
            context.position
        );
        let mut answer = vec![ANSWER_DONE];
        answer.extend_from_slice(message.as_bytes());
        Ok(answer)
    }

    fn crl(&mut self, context: &ExecutionContext) -> Result<Vec<u8>, Refusal> {
        let now_ms = self.now_ms(context)?;
        let this_update_s = now_ms / 1000;
        let number = context.position.saturating_add(1);
        let revoked = self
            .state
            .revoked
            .iter()
            .map(|(serial, revocation)| {
                let extensions = match crl_reason(revocation.reason) {
                    Some(reason) => Some(vec![x509::extension(false, &reason)?]),
                    None => None,
                };
                Ok(RevokedCert {
                    serial_number: SerialNumber::new(&serial.to_be_bytes())?,
                    revocation_date: x509::time(revocation.time_ms / 1000)?,
                    crl_entry_extensions: extensions,
                })
            })
            .collect::<Result<Vec<_>, X509Error>>()?;
        let tbs = TbsCertList {
            version: Version::V2,
            signature: x509::sha256_with_rsa(),
            issuer: self.issuer.clone(),
            this_update: x509::time(this_update_s)?,
            next_update: Some(x509::time(this_update_s + CRL_VALIDITY_S)?),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: Some(vec![
                x509::authority_key_identifier(&self.issuer_key_identifier)?,
                x509::extension(
                    false,
                    &CrlNumber(Uint::new(&number.to_be_bytes()).map_err(X509Error::from)?),
                )?,
            ]),
        };
        let tbs = tbs.to_der().map_err(X509Error::from)?;
        self.state.time_ms_max = now_ms;
        let mut answer = Vec::with_capacity(1 + tbs.len());
        answer.push(ANSWER_CRL);
        answer.extend_from_slice(&tbs);
        Ok(answer)
    }
}

/// The entry extension of a reason code; none for `unspecified` (RFC 5280 §5.3.1 says to
/// leave it out).
fn crl_reason(code: u8) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        9 => CrlReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// A PKCS#10 request whose self-signature verified, whose key the key policy accepts, and
/// whose names are DNS host names: what the CA may certify once the names are authorized.
struct CheckedRequest {
    subject: Name,
    /// The CN first, then the other DNS names of the request, without repeats.
    names: Vec<String>,
    public_key: SubjectPublicKeyInfoOwned,
    public_key_der: Vec<u8>,
    is_rsa: bool,
}

impl CheckedRequest {
    fn parse(csr_der: &[u8], keys: &KeyPolicy) -> Result<Self, Refusal> {
        let request = CertReq::from_der(csr_der).map_err(|error| {
            Refusal::malformed(format!("not a PKCS#10 certification request: {error}"))
        })?;
        // Re-encoding gives back the input only for DER: then the signed bytes are exactly
        // the re-encoded `CertificationRequestInfo`.
        let info_der = request.info.to_der().map_err(X509Error::from)?;
        if request.to_der().map_err(X509Error::from)? != csr_der {
            return Err(Refusal::malformed(
                "the certification request is not in DER",
            ));
        }
        if request.info.version != x509_cert::request::Version::V1 {
            return Err(Refusal::malformed(
                "the certification request's version is not 1",
            ));
        }
        let public_key = request.info.public_key.clone();
        let public_key_der = public_key.to_der().map_err(X509Error::from)?;
        let signature = request.signature.as_bytes().ok_or_else(|| {
            Refusal::malformed("the request's signature is not a whole number of bytes")
        })?;
        let is_rsa =
            check_key_and_signature(&public_key, keys, &request.algorithm, &info_der, signature)?;
        let common_name = common_name(&request.info.subject)?;
        let mut names = vec![common_name];
        for name in requested_dns_names(&request)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.len() > NAMES_PER_CERTIFICATE_MAX {
            return Err(Refusal::forbidden(format!(
                "{} names; a certificate holds at most {NAMES_PER_CERTIFICATE_MAX}",
                names.len()
            )));
        }
        Ok(Self {
            subject: request.info.subject,
            names,
            public_key,
            public_key_der,
            is_rsa,
        })
    }
}

/// Checks the key against the policy and the request's self-signature over `info_der`;
/// whether the key is RSA.
fn check_key_and_signature(
    public_key: &SubjectPublicKeyInfoOwned,
    keys: &KeyPolicy,
    algorithm: &spki::AlgorithmIdentifierOwned,
    info_der: &[u8],
    signature: &[u8],
) -> Result<bool, Refusal> {
    let key_bits = public_key
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Refusal::malformed("the public key is not a whole number of bytes"))?;
    let bad_signature = || Refusal::malformed("the request's self-signature does not verify");
    let key_oid = public_key.algorithm.oid;
    if key_oid == rfc5912::RSA_ENCRYPTION {
        if keys.rsa_bits_min == 0 {
            return Err(Refusal::forbidden("RSA keys are not allowed by the policy"));
        }
        let key = rsa::RsaPublicKey::from_pkcs1_der(key_bits).map_err(|_| {
            Refusal::forbidden(format!(
                "not an RSA public key of at most {RSA_BITS_MAX} bits with a usable exponent"
            ))
        })?;
        let bits = key.n().bits();
        if bits < keys.rsa_bits_min as usize {
            return Err(Refusal::forbidden(format!(
                "an RSA key of {bits} bits is weaker than the policy's minimum of {}",
                keys.rsa_bits_min
            )));
        }
        if algorithm.oid != rfc5912::SHA_256_WITH_RSA_ENCRYPTION {
            return Err(Refusal::forbidden(format!(
                "signature algorithm {} is not accepted for RSA keys (sha256WithRSAEncryption is)",
                algorithm.oid
            )));
        }
        let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
        let signature =
            rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| bad_signature())?;
        verifier
            .verify(info_der, &signature)
            .map_err(|_| bad_signature())?;
        return Ok(true);
    }
    if key_oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve_oid = public_key
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.decode_as::<ObjectIdentifier>().ok())
            .ok_or_else(|| Refusal::malformed("an EC key without a named curve"))?;
        let curve = if curve_oid == rfc5912::SECP_256_R_1 {
            Curve::P256
        } else if curve_oid == rfc5912::SECP_384_R_1 {
            Curve::P384
        } else {
            return Err(Refusal::forbidden(format!(
                "the elliptic curve {curve_oid} is not allowed by the policy"
            )));
        };
        if !keys.ec_curves.contains(&curve) {
            return Err(Refusal::forbidden(format!(
                "the elliptic curve {curve:?} is not allowed by the policy"
            )));
        }
        let digest = if algorithm.oid == rfc5912::ECDSA_WITH_SHA_256 {
            Sha256::digest(info_der).to_vec()
        } else if algorithm.oid == rfc5912::ECDSA_WITH_SHA_384 {
            Sha384::digest(info_der).to_vec()
        } else {
            return Err(Refusal::forbidden(format!(
                "signature algorithm {} is not accepted for EC keys (ecdsa-with-SHA256/384 are)",
                algorithm.oid
            )));
        };
        let verified = match curve {
            Curve::P256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                    .map_err(|_| Refusal::malformed("not a P-256 public key"))?;
                let signature = p256::ecdsa::DerSignature::from_bytes(signature)
                    .map_err(|_| bad_signature())?;
                key.verify_prehash(&digest, &signature).is_ok()
            }
            Curve::P384 => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                    .map_err(|_| Refusal::malformed("not a P-384 public key"))?;
                let signature = p384::ecdsa::DerSignature::from_bytes(signature)
                    .map_err(|_| bad_signature())?;
                key.verify_prehash(&digest, &signature).is_ok()
            }
        };
        if !verified {
            return Err(bad_signature());
        }
        return Ok(false);
    }
    Err(Refusal::forbidden(format!(
        "key algorithm {key_oid} is not allowed by the policy (RSA, ECDSA P-256/P-384 are)"
    )))
}

/// The lower-cased DNS name of the subject's only attribute, a common name: the CA certifies
/// names, nothing else, so a subject with other attributes (O, C, ...) is refused rather
/// than vouched for.
fn common_name(subject: &Name) -> Result<String, Refusal> {
    let attributes: Vec<_> = subject.0.iter().flat_map(|rdn| rdn.0.iter()).collect();
    let [attribute] = attributes.as_slice() else {
        return Err(Refusal::forbidden(
            "the subject must be exactly one common name (CN=host.name)",
        ));
    };
    if attribute.oid != rfc4519::CN {
        return Err(Refusal::forbidden(format!(
            "subject attribute {} is not allowed; the subject must be CN=host.name",
            attribute.oid
        )));
    }
    let tag = attribute.value.tag();
    if ![Tag::Utf8String, Tag::PrintableString, Tag::Ia5String].contains(&tag) {
        return Err(Refusal::malformed(format!(
            "the common name is a {tag}, not a string"
        )));
    }
    let text = std::str::from_utf8(attribute.value.value())
        .map_err(|_| Refusal::malformed("the common name is not UTF-8"))?;
    dns_name(text)
}

fn dns_name(text: &str) -> Result<String, Refusal> {
    let lower = text.to_ascii_lowercase();
    if !is_dns_name(&lower) {
        return Err(Refusal::forbidden(format!(
            "{text:?} is not a DNS host name (wildcards are not issued)"
        )));
    }
    Ok(lower)
}

/// The DNS names of the request's subjectAltName extension request, if any. Other requested
/// extensions are ignored: the CA sets its own.
fn requested_dns_names(request: &CertReq) -> Result<Vec<String>, Refusal> {
    let mut names = Vec::new();
    for attribute in request.info.attributes.iter() {
        if attribute.oid != rfc5912::ID_EXTENSION_REQ {
            continue;
        }
        for value in attribute.values.iter() {
            let der = value.to_der().map_err(X509Error::from)?;
            let extensions = Vec::<Extension>::from_der(&der).map_err(|error| {
                Refusal::malformed(format!("the extension request does not parse: {error}"))
            })?;
            for extension in extensions {
                if extension.extn_id != rfc5912::ID_CE_SUBJECT_ALT_NAME {
                    continue;
                }
                let alt =
                    SubjectAltName::from_der(extension.extn_value.as_bytes()).map_err(|error| {
                        Refusal::malformed(format!("subjectAltName does not parse: {error}"))
                    })?;
                for general in alt.0 {
                    let GeneralName::DnsName(dns) = general else {
                        return Err(Refusal::forbidden(
                            "only DNS names may be requested as subject alternative names",
                        ));
                    };
                    if names.len() >= NAMES_PER_CERTIFICATE_MAX {
                        return Err(Refusal::forbidden(format!(
                            "more than {NAMES_PER_CERTIFICATE_MAX} names requested"
                        )));
                    }
                    names.push(dns_name(dns.as_str())?);
                }
            }
        }
    }
    Ok(names)
}

impl Service for Ca {
    fn name(&self) -> &'static str {
        "ca"
    }

    fn execute(&mut self, context: &ExecutionContext, request: &[u8]) -> Vec<u8> {
        match self.execute_request(context, request) {
            Ok(answer) => answer,
            Err(refusal) => refusal.encode(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = &self.state;
        let mut out = Vec::with_capacity(
            SNAPSHOT_MAGIC.len() + 24 + 8 * state.issued.len() + 17 * state.revoked.len(),
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&state.time_ms_max.to_be_bytes());
        out.extend_from_slice(&(state.issued.len() as u64).to_be_bytes());
        for serial in &state.issued {
            out.extend_from_slice(&serial.to_be_bytes());
        }
        out.extend_from_slice(&(state.revoked.len() as u64).to_be_bytes());
        for (serial, revocation) in &state.revoked {
            out.extend_from_slice(&serial.to_be_bytes());
            out.extend_from_slice(&revocation.time_ms.to_be_bytes());
            out.push(revocation.reason);
        }
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError> {
        let state = decode_snapshot(snapshot, &self.policy)
            .map_err(|why| ServiceError::InvalidSnapshot { service: "ca", why })?;
        self.state = state;
        Ok(())
    }

    fn signing_message(&self, _request: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
        match answer.split_first() {
            Some((&(ANSWER_CERTIFICATE | ANSWER_CRL), tbs)) => Some(tbs.to_vec()),
            _ => None,
        }
    }

    fn complete(&self, _request: &[u8], answer: &[u8], signature: &[u8]) -> Vec<u8> {
        let (label, tbs) = match answer.split_first() {
            Some((&ANSWER_CERTIFICATE, tbs)) => (x509::PEM_LABEL_CERTIFICATE, tbs),
            Some((&ANSWER_CRL, tbs)) => (x509::PEM_LABEL_CRL, tbs),
            _ => return answer.to_vec(),
        };
        match x509::assemble(tbs, signature).and_then(|der| x509::to_pem(label, &der)) {
            Ok(pem) => pem.into_bytes(),
            Err(error) => {
                Refusal::new(500, format!("assembling the signed answer: {error}")).encode()
            }
        }
    }
}

/// Decodes a snapshot within `policy`'s bounds.
fn decode_snapshot(snapshot: &[u8], policy: &CaPolicy) -> Result<CaState, String> {
    let mut reader = Reader { bytes: snapshot };
    if reader.take(SNAPSHOT_MAGIC.len(), "magic")? != SNAPSHOT_MAGIC {
        return Err("not a CA snapshot".into());
    }
    let time_ms_max = reader.u64("time")?;
    let issued_count = reader.u64("issued count")?;
    if issued_count > policy.certificates_max {
        return Err(format!(
            "{issued_count} issued serials exceed the policy's maximum of {}",
            policy.certificates_max
        ));
    }
    let mut issued = BTreeSet::new();
    let mut previous = None;
    for _ in 0..issued_count {
        let serial = reader.u64("issued serial")?;
        if serial == 0 || previous.is_some_and(|previous| serial <= previous) {
            return Err("issued serials are not positive and strictly increasing".into());
        }
        previous = Some(serial);
        issued.insert(serial);
    }
    let revoked_count = reader.u64("revoked count")?;
    if revoked_count > policy.revocations_max || revoked_count > issued_count {
        return Err(format!(
            "{revoked_count} revocations exceed the policy's maximum of {} or the issued count",
            policy.revocations_max
        ));
    }
    let mut revoked = BTreeMap::new();
    let mut previous = None;
    for _ in 0..revoked_count {
        let serial = reader.u64("revoked serial")?;
        let time_ms = reader.u64("revocation time")?;
        let reason = reader.u8("revocation reason")?;
        if previous.is_some_and(|previous| serial <= previous) {
            return Err("revoked serials are not strictly increasing".into());
        }
        previous = Some(serial);
        if !issued.contains(&serial) {
            return Err(format!("revoked serial {serial} was never issued"));
        }
        if reason_name(reason).is_none() {
            return Err(format!("revocation reason {reason} is not offered"));
        }
        if time_ms == 0 || time_ms > time_ms_max {
            return Err(format!(
                "revocation time {time_ms} is zero or after the largest time used"
            ));
        }
        revoked.insert(serial, Revocation { time_ms, reason });
    }
    reader.finish()?;
    Ok(CaState {
        time_ms_max,
        issued,
        revoked,
    })
}
