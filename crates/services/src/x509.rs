//! X.509 building blocks shared by the dealer (the root and notary certificates of
//! `sintra keygen`) and the certification authority ([`crate::ca`]).
//!
//! Everything here is a pure function of its arguments, so every server derives the same
//! `TBSCertificate` (or `TBSCertList`) bytes and their threshold-RSA signature shares combine.
//! The service key signs the DER of the to-be-signed structure with RSASSA-PKCS1-v1_5 over
//! SHA-256 ([`assemble`] then wraps it as `sha256WithRSAEncryption`), which is exactly what
//! `openssl verify` checks.
//!
//! Key identifiers (subject and authority) are the first 160 bits of the SHA-256 of the
//! `subjectPublicKey` bits (RFC 7093 §2 method 1), so a certificate's authority key identifier
//! matches the root's subject key identifier without either being stored.

use const_oid::AssociatedOid;
use const_oid::db::{rfc4519, rfc5280, rfc5912};
use der::asn1::{Any, AnyRef, BitString, GeneralizedTime, Ia5String, Null, OctetString, UtcTime};
use der::pem::LineEnding;
use der::{Decode, Encode, Sequence, Tag};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

/// PEM label of a certificate.
pub const PEM_LABEL_CERTIFICATE: &str = "CERTIFICATE";
/// PEM label of a certificate revocation list.
pub const PEM_LABEL_CRL: &str = "X509 CRL";
/// PEM label of a PKCS#10 certification request (`openssl req` writes this one).
pub const PEM_LABEL_CSR: &str = "CERTIFICATE REQUEST";
/// PEM label some older tools write for a PKCS#10 request; accepted on input.
pub const PEM_LABEL_CSR_OLD: &str = "NEW CERTIFICATE REQUEST";
/// Bytes of a key identifier (160 bits, the customary length).
pub const KEY_IDENTIFIER_BYTES: usize = 20;
/// Seconds in a day, for validity periods.
pub const SECONDS_PER_DAY: u64 = 86_400;
/// The first second (since the Unix epoch) that RFC 5280 encodes as `GeneralizedTime`
/// (2050-01-01T00:00:00Z); earlier times are `UTCTime`.
pub const GENERALIZED_TIME_FROM_S: u64 = 2_524_608_000;
/// The last second X.509 times can express (9999-12-31T23:59:59Z).
pub const TIME_S_MAX: u64 = 253_402_300_799;
/// The serials the dealer gives the root and notary certificates: `2^64 + 1` and `2^64 + 2`,
/// as big-endian bytes. The CA numbers its certificates `position + 1 <= 2^64`, so these never
/// collide with an issued serial under the same issuer name.
pub const ROOT_SERIAL: [u8; 9] = [1, 0, 0, 0, 0, 0, 0, 0, 1];
/// See [`ROOT_SERIAL`].
pub const NOTARY_SERIAL: [u8; 9] = [1, 0, 0, 0, 0, 0, 0, 0, 2];

/// Why a certificate structure could not be built or read. The text is deterministic (it
/// depends on the input only), so it may appear in a service's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// DER encoding or decoding failed.
    #[error("DER: {0}")]
    Der(String),
    /// A PEM document was malformed or had an unexpected label.
    #[error("PEM: {0}")]
    Pem(String),
    /// A time outside what X.509 can express.
    #[error("time {0} s is outside the years 1970..=9999")]
    Time(u64),
    /// Something else about the input is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

impl From<der::Error> for X509Error {
    fn from(error: der::Error) -> Self {
        Self::Der(error.to_string())
    }
}

/// `sha256WithRSAEncryption` with its NULL parameters, the only signature algorithm the
/// service key produces.
pub fn sha256_with_rsa() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        parameters: Some(Any::from(Null)),
    }
}

/// A name of UTF-8 `CN` (and `O` when given) attributes, one per RDN, `O` first as usual.
pub fn name(common_name: &str, organization: Option<&str>) -> Result<Name, X509Error> {
    let mut rdns = Vec::with_capacity(2);
    if let Some(organization) = organization {
        rdns.push(rdn(rfc4519::O, organization)?);
    }
    rdns.push(rdn(rfc4519::CN, common_name)?);
    Ok(RdnSequence(rdns))
}

fn rdn(
    oid: der::oid::ObjectIdentifier,
    value: &str,
) -> Result<RelativeDistinguishedName, X509Error> {
    let value = Any::new(Tag::Utf8String, value.as_bytes())?;
    let set = der::asn1::SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])?;
    Ok(RelativeDistinguishedName(set))
}

/// The X.509 `Time` of `seconds` since the Unix epoch: `UTCTime` before 2050, `GeneralizedTime`
/// from then on (RFC 5280 §4.1.2.5).
pub fn time(seconds: u64) -> Result<Time, X509Error> {
    if seconds > TIME_S_MAX {
        return Err(X509Error::Time(seconds));
    }
    let duration = std::time::Duration::from_secs(seconds);
    let date_time =
        der::DateTime::from_unix_duration(duration).map_err(|_| X509Error::Time(seconds))?;
    if seconds < GENERALIZED_TIME_FROM_S {
        Ok(Time::UtcTime(
            UtcTime::from_date_time(date_time).map_err(|_| X509Error::Time(seconds))?,
        ))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(
            date_time,
        )))
    }
}

/// The key identifier of a `SubjectPublicKeyInfo` DER: the first 160 bits of the SHA-256 of its
/// `subjectPublicKey` bits (RFC 7093 §2 method 1).
pub fn key_identifier(spki_der: &[u8]) -> Result<[u8; KEY_IDENTIFIER_BYTES], X509Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    Ok(key_identifier_of(&spki))
}

/// [`key_identifier`] of a parsed key.
pub fn key_identifier_of(spki: &SubjectPublicKeyInfoOwned) -> [u8; KEY_IDENTIFIER_BYTES] {
    let digest = Sha256::digest(spki.subject_public_key.raw_bytes());
    let mut out = [0u8; KEY_IDENTIFIER_BYTES];
    out.copy_from_slice(&digest[..KEY_IDENTIFIER_BYTES]);
    out
}

/// An extension holding `value`'s DER.
pub fn extension<T: Encode + AssociatedOid>(
    critical: bool,
    value: &T,
) -> Result<Extension, X509Error> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// The non-critical subject key identifier extension of `spki`.
pub fn subject_key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<Extension, X509Error> {
    let identifier = OctetString::new(key_identifier_of(spki).to_vec())?;
    extension(false, &SubjectKeyIdentifier(identifier))
}

/// The non-critical authority key identifier extension naming the issuer's key identifier.
pub fn authority_key_identifier(issuer_key_identifier: &[u8]) -> Result<Extension, X509Error> {
    extension(
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(issuer_key_identifier.to_vec())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )
}

/// The subject alternative name extension listing `dns_names` (non-critical: the subject
/// is not empty).
pub fn dns_subject_alt_name(dns_names: &[String]) -> Result<Extension, X509Error> {
    let names = dns_names
        .iter()
        .map(|name| Ia5String::new(name).map(GeneralName::DnsName))
        .collect::<Result<Vec<_>, _>>()?;
    extension(false, &SubjectAltName(names))
}

/// What a `TBSCertificate` says; [`tbs_certificate`] encodes it.
#[derive(Debug, Clone)]
pub struct TbsFields {
    /// The serial number, big-endian, positive (leading zeros are stripped), at most 20 bytes.
    pub serial_be: Vec<u8>,
    /// The issuer's name (the subject of the issuing certificate).
    pub issuer: Name,
    /// The subject's name.
    pub subject: Name,
    /// `notBefore`, seconds since the Unix epoch.
    pub not_before_s: u64,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after_s: u64,
    /// The subject's `SubjectPublicKeyInfo`.
    pub subject_public_key_info: SubjectPublicKeyInfoOwned,
    /// The extensions, in order.
    pub extensions: Vec<Extension>,
}

/// The DER of a version-3 `TBSCertificate` signed with `sha256WithRSAEncryption`.
pub fn tbs_certificate(fields: &TbsFields) -> Result<Vec<u8>, X509Error> {
    if fields.not_after_s < fields.not_before_s {
        return Err(X509Error::Invalid("notAfter is before notBefore".into()));
    }
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&fields.serial_be)?,
        signature: sha256_with_rsa(),
        issuer: fields.issuer.clone(),
        validity: Validity {
            not_before: time(fields.not_before_s)?,
            not_after: time(fields.not_after_s)?,
        },
        subject: fields.subject.clone(),
        subject_public_key_info: fields.subject_public_key_info.clone(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!fields.extensions.is_empty()).then(|| fields.extensions.clone()),
    };
    Ok(tbs.to_der()?)
}

/// `Certificate` and `CertificateList` share this shape: the to-be-signed part (kept as the
/// exact bytes that were signed), the algorithm, the signature.
#[derive(Sequence)]
struct Signed<'a> {
    to_be_signed: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

/// Wraps a signed structure: `SEQUENCE { tbs, sha256WithRSAEncryption, BIT STRING signature }`.
/// `tbs_der` must be one DER element (a `TBSCertificate` or a `TBSCertList`).
pub fn assemble(tbs_der: &[u8], signature: &[u8]) -> Result<Vec<u8>, X509Error> {
    let signed = Signed {
        to_be_signed: AnyRef::from_der(tbs_der)?,
        algorithm: sha256_with_rsa(),
        signature: BitString::from_bytes(signature)?,
    };
    Ok(signed.to_der()?)
}

/// The root certificate's `TBSCertificate`: self-issued to the service key, named
/// `CN=<name> root CA, O=<name>`, with basicConstraints `CA:TRUE` and keyUsage
/// `keyCertSign, cRLSign` (both critical) and a subject key identifier.
pub fn root_tbs(
    group_name: &str,
    service_spki_der: &[u8],
    not_before_s: u64,
    not_after_s: u64,
) -> Result<Vec<u8>, X509Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(service_spki_der)?;
    let subject = root_name(group_name)?;
    let extensions = vec![
        extension(
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
        )?,
        extension(true, &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))?,
        subject_key_identifier(&spki)?,
    ];
    tbs_certificate(&TbsFields {
        serial_be: ROOT_SERIAL.to_vec(),
        issuer: subject.clone(),
        subject,
        not_before_s,
        not_after_s,
        subject_public_key_info: spki,
        extensions,
    })
}

/// The notary certificate's `TBSCertificate`: issued by the root to the same service key,
/// named `CN=<name> notary, O=<name>`, with extendedKeyUsage `timeStamping` (critical, as
/// RFC 3161 §2.3 requires), keyUsage `digitalSignature, nonRepudiation` and both key
/// identifiers.
pub fn notary_tbs(
    group_name: &str,
    service_spki_der: &[u8],
    not_before_s: u64,
    not_after_s: u64,
) -> Result<Vec<u8>, X509Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(service_spki_der)?;
    let key_identifier = key_identifier_of(&spki);
    let extensions = vec![
        extension(
            true,
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
        )?,
        extension(
            true,
            &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
        )?,
        extension(true, &ExtendedKeyUsage(vec![rfc5280::ID_KP_TIME_STAMPING]))?,
        subject_key_identifier(&spki)?,
        authority_key_identifier(&key_identifier)?,
    ];
    tbs_certificate(&TbsFields {
        serial_be: NOTARY_SERIAL.to_vec(),
        issuer: root_name(group_name)?,
        subject: name(&format!("{group_name} notary"), Some(group_name))?,
        not_before_s,
        not_after_s,
        subject_public_key_info: spki,
        extensions,
    })
}

/// The root's name, `CN=<name> root CA, O=<name>`.
pub fn root_name(group_name: &str) -> Result<Name, X509Error> {
    name(&format!("{group_name} root CA"), Some(group_name))
}

/// Checks that `der` is one X.509 certificate (what a loader does before handing it on).
pub fn check_certificate(der: &[u8]) -> Result<(), X509Error> {
    x509_cert::Certificate::from_der(der)?;
    Ok(())
}

/// PEM text of `der` under `label`, with LF line endings.
pub fn to_pem(label: &str, der: &[u8]) -> Result<String, X509Error> {
    der::pem::encode_string(label, LineEnding::LF, der)
        .map_err(|error| X509Error::Pem(error.to_string()))
}

/// The serial number of a PEM certificate, if it fits a `u64` (the CA's serials do: they are
/// log positions). For clients and tests that report what they were given; it checks nothing.
pub fn certificate_serial(pem: &[u8]) -> Option<u64> {
    let der = pem_to_der(pem, &[PEM_LABEL_CERTIFICATE]).ok()?;
    let certificate = x509_cert::Certificate::from_der(&der).ok()?;
    let bytes = certificate.tbs_certificate.serial_number.as_bytes();
    let bytes = match bytes {
        [0, rest @ ..] => rest,
        other => other,
    };
    if bytes.len() > 8 {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u64, |value, byte| value << 8 | u64::from(*byte)),
    )
}

/// The DER inside one PEM document whose label is one of `labels`.
pub fn pem_to_der(pem: &[u8], labels: &[&str]) -> Result<Vec<u8>, X509Error> {
    let (label, der) =
        der::pem::decode_vec(pem).map_err(|error| X509Error::Pem(error.to_string()))?;
    if !labels.contains(&label) {
        return Err(X509Error::Pem(format!(
            "label {label:?}, expected one of {labels:?}"
        )));
    }
    Ok(der)
}

/// A PKCS#10 request as DER, from DER or PEM (`-----BEGIN CERTIFICATE REQUEST-----`): what the
/// gateway calls on an HTTP body before it encodes an issue request.
pub fn csr_to_der(body: &[u8]) -> Result<Vec<u8>, X509Error> {
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        pem_to_der(trimmed, &[PEM_LABEL_CSR, PEM_LABEL_CSR_OLD])
    } else {
        Ok(body.to_vec())
    }
}
