//! The notary: an RFC 3161 time-stamping authority whose tokens the servers sign together with
//! the threshold service key, and which `openssl ts -verify` accepts (docs/services/notary.md).
//!
//! Guarantees: every granted token's `serialNumber` is the request's 1-based position in the
//! ordered log, so serials are unique, gap-free over the log and increasing; its `genTime` is the
//! maximum of the round's agreed time and the latest `genTime` granted before, so time never goes
//! backwards; the token carries the one policy [`POLICY_OID`].
//!
//! Encodings:
//! - request: `[0x10][nonce 16][TimeStampReq DER]` ([`encode_request`]); tags `0x10..=0x1F`
//!   belong to the notary, only `0x10` is defined.
//! - answer (what `execute` returns and the log keeps):
//!   - granted: `[0x00][certReq u8][TSTInfo DER]`. [`Service::signing_message`] gives the DER of
//!     the CMS signed attributes (a `SET OF Attribute`: contentType id-ct-TSTInfo, messageDigest
//!     SHA-256 of the TSTInfo DER, signingCertificateV2 naming the TSA certificate by its
//!     SHA-256) and [`Service::complete`] wraps TSTInfo, attributes and signature into the DER
//!     `TimeStampResp` with status granted;
//!   - rejected: the DER `TimeStampResp` itself (status rejection with a failInfo bit), which
//!     starts with `0x30` and needs no signature.
//! - snapshot: `"sintra/notary/v1" ‖ last genTime in ms u64`.
//!
//! The service never reads a clock: time comes from [`ExecutionContext::time_ms`].

use std::time::Duration;

use cms::cert::IssuerAndSerialNumber;
use cms::cert::x509::Certificate;
use cms::cert::x509::ext::pkix::ExtendedKeyUsage;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, Int, OctetString, SetOfVec};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag,
    Tagged, Writer,
};
use sha2::{Digest, Sha256};
use sintra_crypto::rsa;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::Extensions;
use x509_tsp::{MessageImprint, TspVersion};

use crate::{ExecutionContext, HttpReply, REQUEST_NONCE_BYTES, Service, ServiceError};

/// The request tag of a time-stamp query.
pub const TAG_QUERY: u8 = 0x10;
/// Bytes of a DER `TimeStampReq`, at most (4 KiB: a SHA-512 query with policy and nonce is
/// about 120 bytes; the rest leaves room for extensions, which are refused anyway).
pub const QUERY_BYTES_MAX: usize = 4 << 10;
/// Bytes of an encoded request, at most.
pub const REQUEST_BYTES_MAX: usize = 1 + REQUEST_NONCE_BYTES + QUERY_BYTES_MAX;
/// The largest `genTime` the notary can state, in ms since the Unix epoch
/// (9999-12-31T23:59:59.999Z, the end of four-digit years).
pub const GEN_TIME_MS_MAX: u64 = 253_402_300_799_999;
/// The dotted form of [`POLICY_OID`]: the UUID `13df5e7d-edc7-425f-9cc4-d027e2a00f57` under
/// `2.25` (ITU-T X.667), drawn once for sintra's time-stamping policy.
pub const POLICY_OID: &str = "2.25.26415130642978562692083716588964941655";
/// The content octets of the DER encoding of [`POLICY_OID`]. Kept as bytes because its last arc
/// is a 128-bit integer, wider than the arcs common OID types hold.
pub const POLICY_OID_CONTENT: [u8; 19] = [
    0x69, 0xa7, 0xdf, 0xaf, 0x9f, 0xbd, 0xdc, 0xba, 0x89, 0xbf, 0x9c, 0xe2, 0xb4, 0x84, 0xfe, 0x95,
    0x80, 0x9e, 0x57,
];
/// The media type of a query (`POST /tsa`).
pub const QUERY_CONTENT_TYPE: &str = "application/timestamp-query";
/// The media type of every answer, granted or rejected.
pub const REPLY_CONTENT_TYPE: &str = "application/timestamp-reply";

const ANSWER_GRANTED: u8 = 0x00;
const SNAPSHOT_MAGIC: &[u8] = b"sintra/notary/v1";

const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA_384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA_512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// `TimeStampResp { status { rejection } }`: the answer if even a rejection fails to encode,
/// which the fixed shapes below rule out; kept so no path panics.
const REJECTION_FALLBACK: [u8; 7] = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02];

/// Why the notary cannot be set up with a certificate. Local misuse: the dealer's TSA
/// certificate is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotaryError {
    /// The bytes are not a DER X.509 certificate.
    #[error("the TSA certificate does not parse: {0}")]
    Certificate(String),
    /// The certificate parses but re-encodes differently, so it is not DER and relying parties
    /// would compute another hash than signingCertificateV2 states.
    #[error("the TSA certificate is not DER encoded")]
    NotDer,
    /// RFC 3161 §2.3: the TSA certificate must have a critical extended key usage holding only
    /// id-kp-timeStamping.
    #[error("the TSA certificate lacks a critical extended key usage of timeStamping only")]
    NotTimeStamping,
}

/// A failInfo bit of a rejection (RFC 3161 §2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailInfo {
    /// Unrecognized or unsupported hash algorithm.
    BadAlg,
    /// The request's tag is not one the notary knows.
    BadRequest,
    /// The data submitted has the wrong format.
    BadDataFormat,
    /// The time could not be stated.
    TimeNotAvailable,
    /// The requested policy is not the notary's.
    UnacceptedPolicy,
    /// The requested extension is not supported.
    UnacceptedExtension,
    /// The request cannot be handled due to a failure of the notary itself.
    SystemFailure,
}

impl FailInfo {
    /// The bit's number in `PKIFailureInfo`.
    fn bit(self) -> usize {
        match self {
            Self::BadAlg => 0,
            Self::BadRequest => 2,
            Self::BadDataFormat => 5,
            Self::TimeNotAvailable => 14,
            Self::UnacceptedPolicy => 15,
            Self::UnacceptedExtension => 16,
            Self::SystemFailure => 25,
        }
    }

    /// `PKIFailureInfo` with this one bit set: DER drops trailing zero bits, so the string
    /// ends at the set bit.
    fn bit_string(self) -> der::Result<BitString> {
        let bit = self.bit();
        let mut bytes = vec![0u8; bit / 8 + 1];
        bytes[bit / 8] = 0x80 >> (bit % 8);
        BitString::new((7 - bit % 8) as u8, bytes)
    }
}

/// `PKIStatus` values (RFC 3161 §2.4.2).
const STATUS_GRANTED: u8 = 0;
const STATUS_REJECTION: u8 = 2;

/// `PKIStatusInfo` (RFC 3161 §2.4.2).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct StatusInfo {
    status: u8,
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// `TimeStampResp` (RFC 3161 §2.4.2).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct TimeStampResp {
    status: StatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<ContentInfo>,
}

/// A refused request: the failInfo bit and a fixed statusString.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rejection {
    fail_info: FailInfo,
    text: &'static str,
}

impl Rejection {
    const fn new(fail_info: FailInfo, text: &'static str) -> Self {
        Self { fail_info, text }
    }

    /// The DER `TimeStampResp` with status rejection.
    fn encode(self) -> Vec<u8> {
        let encode = || -> der::Result<Vec<u8>> {
            TimeStampResp {
                status: StatusInfo {
                    status: STATUS_REJECTION,
                    status_string: Some(vec![self.text.to_owned()]),
                    fail_info: Some(self.fail_info.bit_string()?),
                },
                time_stamp_token: None,
            }
            .to_der()
        };
        encode().unwrap_or_else(|_| REJECTION_FALLBACK.to_vec())
    }
}

/// An OBJECT IDENTIFIER kept as its content octets, for policies whose arcs exceed 32 bits
/// (such as [`POLICY_OID`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyId(Vec<u8>);

impl FixedTag for PolicyId {
    const TAG: Tag = Tag::ObjectIdentifier;
}

impl<'a> DecodeValue<'a> for PolicyId {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let content = reader.read_vec(header.length)?;
        // Each arc is base-128 with no leading 0x80 octet, the last octet has its top bit clear.
        let malformed = content.last().is_none_or(|last| last & 0x80 != 0)
            || content
                .iter()
                .enumerate()
                .any(|(i, &byte)| byte == 0x80 && (i == 0 || content[i - 1] & 0x80 == 0));
        if malformed {
            return Err(Tag::ObjectIdentifier.value_error());
        }
        Ok(Self(content))
    }
}

impl EncodeValue for PolicyId {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

/// `TimeStampReq` (RFC 3161 §2.4.1), with the policy kept as raw octets.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct TimeStampQuery {
    version: TspVersion,
    message_imprint: MessageImprint,
    #[asn1(optional = "true")]
    req_policy: Option<PolicyId>,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(default = "Default::default")]
    cert_req: bool,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// `TSTInfo` (RFC 3161 §2.4.2) with the fields the notary fills; `genTime` is pre-encoded
/// because it carries milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct TstInfo {
    version: TspVersion,
    policy: PolicyId,
    message_imprint: MessageImprint,
    serial_number: u64,
    gen_time: Any,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
}

/// `ESSCertIDv2` (RFC 5035) with the default hash algorithm SHA-256 and no issuerSerial.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
}

/// `SigningCertificateV2` (RFC 5035) naming one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

/// A time-stamp reply that does not verify for the query a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not a DER `TimeStampResp` with a granted token of this notary's layout.
    #[error("not a granted time-stamp response: {0}")]
    NotGranted(String),
    /// The token stamps another document or query (imprint or nonce differ).
    #[error("the token is for another query: {0}")]
    OtherQuery(&'static str),
    /// The signed attributes do not bind the token, or the signature does not verify under
    /// the service key.
    #[error("the token's signature does not verify under the service key")]
    BadSignature,
}

/// A client's DER `TimeStampReq` for a SHA-256 digest, with `nonce` and `certReq` (what
/// `openssl ts -query -sha256 [-cert]` sends).
pub fn encode_query(sha256: &[u8; 32], nonce: u64, cert_req: bool) -> Vec<u8> {
    let query = TimeStampQuery {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ID_SHA_256,
                parameters: None,
            },
            hashed_message: OctetString::new(sha256.to_vec())
                .unwrap_or_else(|_| unreachable!("32 bytes fit an octet string")),
        },
        req_policy: None,
        nonce: Int::new(&nonce.to_be_bytes()).ok(),
        cert_req,
        extensions: None,
    };
    query
        .to_der()
        .unwrap_or_else(|_| unreachable!("a fixed layout of bounded fields encodes"))
}

/// Checks a reply to [`encode_query`]`(sha256, nonce, _)` as a relying party would, with the
/// service key alone: granted; the token's imprint and nonce are the query's; the signed
/// attributes carry the SHA-256 of the `TSTInfo`; the RSA signature over them verifies. Returns
/// the serial number and the `genTime` text.
pub fn verify_reply(
    reply_der: &[u8],
    sha256: &[u8; 32],
    nonce: u64,
    service_key: &rsa::PublicKey,
) -> Result<(u64, String), ReplyError> {
    let not_granted = |why: &str| ReplyError::NotGranted(why.to_owned());
    let reply = TimeStampResp::from_der(reply_der).map_err(|e| not_granted(&e.to_string()))?;
    if reply.status.status != STATUS_GRANTED {
        return Err(not_granted("the status is not granted"));
    }
    let token = reply
        .time_stamp_token
        .ok_or_else(|| not_granted("no token"))?;
    if token.content_type != ID_SIGNED_DATA {
        return Err(not_granted("the token is not signed data"));
    }
    let signed_data: SignedData = token
        .content
        .decode_as()
        .map_err(|e| not_granted(&e.to_string()))?;
    let content = signed_data
        .encap_content_info
        .econtent
        .ok_or_else(|| not_granted("the token has no content"))?;
    let tst_der = content.value();
    let tst_info = TstInfo::from_der(tst_der).map_err(|e| not_granted(&e.to_string()))?;
    if tst_info.message_imprint.hashed_message.as_bytes() != sha256 {
        return Err(ReplyError::OtherQuery("message imprint"));
    }
    let expected_nonce = Int::new(&nonce.to_be_bytes()).map_err(|e| not_granted(&e.to_string()))?;
    if tst_info.nonce.as_ref() != Some(&expected_nonce) {
        return Err(ReplyError::OtherQuery("nonce"));
    }
    let [signer] = signed_data.signer_infos.0.as_slice() else {
        return Err(not_granted("not exactly one signer"));
    };
    let attributes = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| not_granted("no signed attributes"))?;
    let digest = OctetString::new(Sha256::digest(tst_der).to_vec())
        .map_err(|e| not_granted(&e.to_string()))?;
    let binds = attributes.iter().any(|attribute| {
        attribute.oid == ID_MESSAGE_DIGEST
            && attribute
                .values
                .iter()
                .any(|value| value.decode_as::<OctetString>().is_ok_and(|v| v == digest))
    });
    if !binds {
        return Err(ReplyError::BadSignature);
    }
    let signed = attributes
        .to_der()
        .map_err(|e| not_granted(&e.to_string()))?;
    let signature = rsa::Signature::from_raw_bytes(signer.signature.as_bytes())
        .map_err(|_| ReplyError::BadSignature)?;
    service_key
        .verify(&signed, &signature)
        .map_err(|_| ReplyError::BadSignature)?;
    let time = String::from_utf8(tst_info.gen_time.value().to_vec())
        .map_err(|e| not_granted(&e.to_string()))?;
    Ok((tst_info.serial_number, time))
}

/// The serial number and the `genTime` text (`YYYYMMDDhhmmss[.fff]Z`, which orders as time does)
/// of a granted `TimeStampResp` from this notary; `None` for a rejection or anything else. For
/// clients and tests that report what they were given; it checks no signature.
pub fn granted_serial_and_time(reply_der: &[u8]) -> Option<(u64, String)> {
    let reply = TimeStampResp::from_der(reply_der).ok()?;
    let token = reply.time_stamp_token?;
    if token.content_type != ID_SIGNED_DATA {
        return None;
    }
    let signed_data: SignedData = token.content.decode_as().ok()?;
    let content = signed_data.encap_content_info.econtent?;
    let tst_info = TstInfo::from_der(content.value()).ok()?;
    let time = String::from_utf8(tst_info.gen_time.value().to_vec()).ok()?;
    Some((tst_info.serial_number, time))
}

/// The request bytes for a DER `TimeStampReq` and the gateway's nonce.
pub fn encode_request(nonce: &[u8; REQUEST_NONCE_BYTES], query_der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + REQUEST_NONCE_BYTES + query_der.len());
    out.push(TAG_QUERY);
    out.extend_from_slice(nonce);
    out.extend_from_slice(query_der);
    out
}

/// For a gateway: the DER rejection (failInfo badDataFormat) to answer at once when `body` is
/// not a `TimeStampReq` within [`QUERY_BYTES_MAX`], or `None` when it should be ordered.
pub fn reject_malformed(body: &[u8]) -> Option<Vec<u8>> {
    parse_query(body).err().map(Rejection::encode)
}

/// The HTTP reply for a completed answer: RFC 3161 rejections are replies too, so always 200.
pub fn http_reply(completed: Vec<u8>) -> HttpReply {
    HttpReply {
        status: 200,
        content_type: REPLY_CONTENT_TYPE,
        body: completed,
    }
}

/// Decodes a `TimeStampReq` within its bound (only whether it decodes, not whether it is
/// acceptable).
fn parse_query(query: &[u8]) -> Result<TimeStampQuery, Rejection> {
    if query.len() > QUERY_BYTES_MAX {
        return Err(Rejection::new(
            FailInfo::BadDataFormat,
            "time-stamp request too long",
        ));
    }
    TimeStampQuery::from_der(query)
        .map_err(|_| Rejection::new(FailInfo::BadDataFormat, "not a DER TimeStampReq version 1"))
}

/// Checks what the notary supports: the hash algorithm and its length, the policy, no
/// extensions.
fn check_query(query: &TimeStampQuery) -> Result<(), Rejection> {
    let algorithm = &query.message_imprint.hash_algorithm;
    let digest_bytes = match algorithm.oid {
        ID_SHA_256 => 32,
        ID_SHA_384 => 48,
        ID_SHA_512 => 64,
        _ => {
            return Err(Rejection::new(
                FailInfo::BadAlg,
                "hash algorithm not supported (SHA-256, SHA-384, SHA-512 are)",
            ));
        }
    };
    // RFC 5754: the parameters are absent or NULL.
    if algorithm
        .parameters
        .as_ref()
        .is_some_and(|parameters| parameters.tag() != Tag::Null || !parameters.value().is_empty())
    {
        return Err(Rejection::new(
            FailInfo::BadAlg,
            "hash algorithm parameters must be absent or NULL",
        ));
    }
    if query.message_imprint.hashed_message.as_bytes().len() != digest_bytes {
        return Err(Rejection::new(
            FailInfo::BadDataFormat,
            "hashed message length does not match the hash algorithm",
        ));
    }
    if query
        .req_policy
        .as_ref()
        .is_some_and(|policy| policy.0 != POLICY_OID_CONTENT)
    {
        return Err(Rejection::new(
            FailInfo::UnacceptedPolicy,
            "the only policy is 2.25.26415130642978562692083716588964941655",
        ));
    }
    if query.extensions.is_some() {
        return Err(Rejection::new(
            FailInfo::UnacceptedExtension,
            "no request extensions are supported",
        ));
    }
    Ok(())
}

/// The content octets of a DER GeneralizedTime with milliseconds: `YYYYMMDDHHMMSS[.fff]Z`,
/// fraction without trailing zeros and without a point when zero (X.690 §11.7).
fn generalized_time(time_ms: u64) -> Option<String> {
    if time_ms > GEN_TIME_MS_MAX {
        return None;
    }
    let date = der::DateTime::from_unix_duration(Duration::from_secs(time_ms / 1000)).ok()?;
    let mut text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        date.year(),
        date.month(),
        date.day(),
        date.hour(),
        date.minutes(),
        date.seconds()
    );
    let millis = time_ms % 1000;
    if millis != 0 {
        let fraction = format!("{millis:03}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

/// A granted answer, decoded.
struct Granted<'a> {
    cert_req: bool,
    tst_info: &'a [u8],
}

impl<'a> Granted<'a> {
    fn decode(answer: &'a [u8]) -> Option<Self> {
        match answer {
            [ANSWER_GRANTED, cert_req @ (0 | 1), tst_info @ ..] if !tst_info.is_empty() => {
                Some(Self {
                    cert_req: *cert_req == 1,
                    tst_info,
                })
            }
            _ => None,
        }
    }
}

/// The time-stamping service. Its only state is the latest `genTime` granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notary {
    certificate: Certificate,
    certificate_der: Vec<u8>,
    /// SHA-256 of `certificate_der`, the signingCertificateV2 hash.
    certificate_hash: [u8; 32],
    last_time_ms: u64,
}

impl Notary {
    /// A notary signing as the holder of `tsa_certificate_der`, a DER certificate for the
    /// service key with a critical extended key usage of timeStamping only. Every server of a
    /// group must use the same certificate, or their signed attributes differ.
    pub fn new(tsa_certificate_der: &[u8]) -> Result<Self, NotaryError> {
        let certificate = Certificate::from_der(tsa_certificate_der)
            .map_err(|error| NotaryError::Certificate(error.to_string()))?;
        if certificate.to_der().ok().as_deref() != Some(tsa_certificate_der) {
            return Err(NotaryError::NotDer);
        }
        let time_stamping_only = certificate
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|extension| extension.extn_id == ID_CE_EXT_KEY_USAGE)
            .filter(|extension| extension.critical)
            .and_then(|extension| ExtendedKeyUsage::from_der(extension.extn_value.as_bytes()).ok())
            .is_some_and(|usage| usage.0 == [ID_KP_TIME_STAMPING]);
        if !time_stamping_only {
            return Err(NotaryError::NotTimeStamping);
        }
        Ok(Self {
            certificate,
            certificate_der: tsa_certificate_der.to_vec(),
            certificate_hash: Sha256::digest(tsa_certificate_der).into(),
            last_time_ms: 0,
        })
    }

    /// The TSA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The TSA certificate, PEM (for `GET /tsa/certificate.pem`).
    pub fn certificate_pem(&self) -> String {
        // Encoding a parsed certificate into base64 text cannot fail; keep the path total.
        der::pem::encode_string(
            "CERTIFICATE",
            der::pem::LineEnding::LF,
            &self.certificate_der,
        )
        .unwrap_or_default()
    }

    /// Whether the TSA certificate names `service_key` (its SubjectPublicKeyInfo is the key's):
    /// a node checks this at start, since tokens signed by the service key verify only under a
    /// certificate for that key.
    pub fn certifies(&self, service_key: &rsa::PublicKey) -> bool {
        self.certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .is_ok_and(|spki| spki == service_key.to_public_key_der())
    }

    /// The latest `genTime` granted, ms since the Unix epoch (0 before the first).
    pub fn last_time_ms(&self) -> u64 {
        self.last_time_ms
    }

    /// Grants or refuses one request; only a grant changes the state.
    fn answer(&mut self, context: &ExecutionContext, request: &[u8]) -> Result<Vec<u8>, Rejection> {
        let query = match request {
            [TAG_QUERY, rest @ ..] if rest.len() >= REQUEST_NONCE_BYTES => {
                &rest[REQUEST_NONCE_BYTES..]
            }
            [TAG_QUERY, ..] => {
                return Err(Rejection::new(FailInfo::BadRequest, "truncated request"));
            }
            _ => {
                return Err(Rejection::new(
                    FailInfo::BadRequest,
                    "not a time-stamp request",
                ));
            }
        };
        let query = parse_query(query)?;
        check_query(&query)?;
        let serial_number = context.position.checked_add(1).ok_or(Rejection::new(
            FailInfo::SystemFailure,
            "serial numbers exhausted",
        ))?;
        let time_ms = self.last_time_ms.max(context.time_ms);
        let time_unavailable = Rejection::new(FailInfo::TimeNotAvailable, "time beyond year 9999");
        let gen_time = generalized_time(time_ms).ok_or(time_unavailable)?;
        let system_failure = Rejection::new(FailInfo::SystemFailure, "encoding failed");
        let tst_info = TstInfo {
            version: TspVersion::V1,
            policy: PolicyId(POLICY_OID_CONTENT.to_vec()),
            message_imprint: query.message_imprint,
            serial_number,
            gen_time: Any::new(Tag::GeneralizedTime, gen_time.as_bytes())
                .map_err(|_| system_failure)?,
            nonce: query.nonce,
        }
        .to_der()
        .map_err(|_| system_failure)?;
        self.last_time_ms = time_ms;
        let mut answer = Vec::with_capacity(2 + tst_info.len());
        answer.push(ANSWER_GRANTED);
        answer.push(u8::from(query.cert_req));
        answer.extend_from_slice(&tst_info);
        Ok(answer)
    }

    /// The CMS signed attributes over a TSTInfo.
    fn signed_attributes(&self, tst_info: &[u8]) -> der::Result<SignedAttributes> {
        let digest = OctetString::new(Sha256::digest(tst_info).to_vec())?;
        let signing_certificate = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                cert_hash: OctetString::new(self.certificate_hash.to_vec())?,
            }],
        };
        let attribute = |oid, value: Any| -> der::Result<Attribute> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value])?,
            })
        };
        SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_CT_TST_INFO)?)?,
            attribute(ID_MESSAGE_DIGEST, Any::encode_from(&digest)?)?,
            attribute(
                ID_AA_SIGNING_CERTIFICATE_V2,
                Any::encode_from(&signing_certificate)?,
            )?,
        ])
    }

    /// The DER `TimeStampResp` granting a token.
    fn granted_response(&self, granted: &Granted<'_>, signature: &[u8]) -> der::Result<Vec<u8>> {
        let sha256 = AlgorithmIdentifierOwned {
            oid: ID_SHA_256,
            parameters: None,
        };
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: self.certificate.tbs_certificate.issuer.clone(),
                serial_number: self.certificate.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs: Some(self.signed_attributes(granted.tst_info)?),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: ID_RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            signature: OctetString::new(signature.to_vec())?,
            unsigned_attrs: None,
        };
        let certificates = if granted.cert_req {
            Some(CertificateSet::try_from(vec![
                cms::cert::CertificateChoices::Certificate(self.certificate.clone()),
            ])?)
        } else {
            None
        };
        let signed_data = SignedData {
            // RFC 5652 §5.1: version 3 because the content type is not id-data.
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![sha256])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TST_INFO,
                econtent: Some(Any::new(Tag::OctetString, granted.tst_info)?),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer])?,
        };
        TimeStampResp {
            status: StatusInfo {
                status: STATUS_GRANTED,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(ContentInfo {
                content_type: ID_SIGNED_DATA,
                content: Any::encode_from(&signed_data)?,
            }),
        }
        .to_der()
    }
}

impl Service for Notary {
    fn name(&self) -> &'static str {
        "notary"
    }

    fn execute(&mut self, context: &ExecutionContext, request: &[u8]) -> Vec<u8> {
        self.answer(context, request)
            .unwrap_or_else(Rejection::encode)
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 8);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&self.last_time_ms.to_be_bytes());
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError> {
        let invalid = |why: &str| ServiceError::InvalidSnapshot {
            service: "notary",
            why: why.to_owned(),
        };
        let time = snapshot
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or_else(|| invalid("not a notary snapshot"))?;
        let time: [u8; 8] = time
            .try_into()
            .map_err(|_| invalid("the time is not 8 bytes"))?;
        let time_ms = u64::from_be_bytes(time);
        if time_ms > GEN_TIME_MS_MAX {
            return Err(invalid("time beyond year 9999"));
        }
        self.last_time_ms = time_ms;
        Ok(())
    }

    fn signing_message(&self, _request: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
        let granted = Granted::decode(answer)?;
        self.signed_attributes(granted.tst_info).ok()?.to_der().ok()
    }

    fn complete(&self, _request: &[u8], answer: &[u8], signature: &[u8]) -> Vec<u8> {
        match Granted::decode(answer) {
            Some(granted) => self
                .granted_response(&granted, signature)
                .unwrap_or_else(|_| {
                    Rejection::new(FailInfo::SystemFailure, "encoding failed").encode()
                }),
            // Rejections are complete as they are.
            None => answer.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_has_milliseconds_without_trailing_zeros() {
        assert_eq!(generalized_time(0).unwrap(), "19700101000000Z");
        assert_eq!(
            generalized_time(1_700_000_000_120).unwrap(),
            "20231114221320.12Z"
        );
        assert_eq!(
            generalized_time(1_700_000_000_001).unwrap(),
            "20231114221320.001Z"
        );
        assert_eq!(
            generalized_time(GEN_TIME_MS_MAX).unwrap(),
            "99991231235959.999Z"
        );
        assert_eq!(generalized_time(GEN_TIME_MS_MAX + 1), None);
    }

    #[test]
    fn the_policy_constant_is_the_der_of_its_dotted_form() {
        // Decode the content octets back to arcs with 128-bit arithmetic.
        let mut arcs: Vec<u128> = Vec::new();
        let mut arc = 0u128;
        for byte in POLICY_OID_CONTENT {
            arc = arc << 7 | u128::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                arcs.push(arc);
                arc = 0;
            }
        }
        let first = arcs.remove(0);
        let mut dotted = format!("{}.{}", first / 40, first % 40);
        for arc in arcs {
            dotted.push_str(&format!(".{arc}"));
        }
        assert_eq!(dotted, POLICY_OID);
    }
}
