//! Validated credential material: the workload's own SVID and the trust bundles it trusts.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::TrustAnchor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use spiffe::{SpiffeId, TrustDomain};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::{ConfigError, Location};
use crate::identity::inspect_leaf;

/// The workload's own X.509-SVID: certificate chain (leaf first) and private key.
///
/// Construction validates it: the leaf is an SVID by the SPIFFE rules and the key matches it.
#[derive(Clone)]
pub struct Svid {
    spiffe_id: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Svid {
    /// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, ConfigError> {
        let chain = parse_certificates(chain_pem, &Location::Field("svid_chain"))?;
        let key = parse_private_key(key_pem, &Location::Field("svid_key"))?;
        Self::from_der(chain, key)
    }

    /// Validates a DER chain (leaf first) and private key.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, ConfigError> {
        Self::load(
            chain,
            key,
            &Location::Field("svid_chain"),
            &Location::Field("svid_key"),
        )
    }

    pub(crate) fn load(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        chain_location: &Location,
        key_location: &Location,
    ) -> Result<Self, ConfigError> {
        let leaf = chain.first().ok_or_else(|| ConfigError::NotPem {
            location: chain_location.clone(),
            problem: "no CERTIFICATE block".into(),
        })?;
        let svid = inspect_leaf(leaf.as_ref()).map_err(|reason| ConfigError::NotSvid {
            location: chain_location.clone(),
            reason,
        })?;
        let provider = crate::crypto::default_provider()?;
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| ConfigError::InvalidKey {
                    location: key_location.clone(),
                    reason: e.to_string(),
                })?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        match certified_key.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                tracing::debug!("cannot tell whether the SVID key matches its certificate");
            }
            Err(_) => {
                return Err(ConfigError::KeyMismatch {
                    location: key_location.clone(),
                });
            }
        }
        Ok(Self {
            spiffe_id: svid.spiffe_id,
            certified_key: Arc::new(certified_key),
            not_before: u64::try_from(svid.validity.0)
                .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap_or(std::time::UNIX_EPOCH),
            not_after: svid.not_after,
        })
    }

    /// The SPIFFE ID this SVID proves.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// When the leaf certificate became valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the leaf certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("chain_len", &self.certified_key.cert.len())
            .field("not_after", &self.not_after)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The CA certificates trusted to issue SVIDs of one trust domain.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    certs: Vec<CertificateDer<'static>>,
    anchors: Arc<[TrustAnchor<'static>]>,
    /// [`anchor_digest`] of each anchor, in the same order.
    anchor_digests: Arc<[[u8; 32]]>,
}

impl TrustBundle {
    /// Parses PEM CA certificates for `trust_domain`.
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, ConfigError> {
        let location = Location::Field("bundle");
        let certs = parse_certificates(pem, &location)?;
        Self::load(trust_domain, certs, &location)
    }

    /// Validates DER CA certificates for `trust_domain`.
    pub fn from_der(
        trust_domain: TrustDomain,
        certs: Vec<CertificateDer<'static>>,
    ) -> Result<Self, ConfigError> {
        Self::load(trust_domain, certs, &Location::Field("bundle"))
    }

    pub(crate) fn load(
        trust_domain: TrustDomain,
        certs: Vec<CertificateDer<'static>>,
        location: &Location,
    ) -> Result<Self, ConfigError> {
        if certs.is_empty() {
            return Err(ConfigError::EmptyBundle {
                location: location.clone(),
                trust_domain,
            });
        }
        let mut anchors = Vec::with_capacity(certs.len());
        for (index, cert) in certs.iter().enumerate() {
            if let Some(found) = spiffe_trust_domain_of_ca(cert.as_ref())
                && found != trust_domain.as_str()
            {
                return Err(ConfigError::BundleTrustDomainMismatch {
                    location: location.clone(),
                    expected: trust_domain,
                    found,
                });
            }
            if !is_ca_certificate(cert.as_ref()) {
                return Err(ConfigError::NotCa {
                    location: location.clone(),
                    index,
                });
            }
            let anchor = webpki::anchor_from_trusted_cert(cert).map_err(|e| {
                ConfigError::InvalidTrustAnchor {
                    location: location.clone(),
                    index,
                    reason: e.to_string(),
                }
            })?;
            anchors.push(anchor.to_owned());
        }
        let anchor_digests = anchors.iter().map(anchor_digest).collect();
        Ok(Self {
            trust_domain,
            certs,
            anchors: anchors.into(),
            anchor_digests,
        })
    }

    /// The trust domain this bundle is for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificates.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// Whether the bundle holds the trust anchor of [`anchor_digest`] `digest`.
    pub(crate) fn holds_anchor(&self, digest: &[u8; 32]) -> bool {
        self.anchor_digests.contains(digest)
    }
}

/// SHA-256 over what path validation takes from a trust anchor (its subject, key and name
/// constraints, each length-prefixed): a path that validated ending at an anchor validates
/// again with any bundle holding an anchor of the same digest (same lists, same time).
pub(crate) fn anchor_digest(anchor: &TrustAnchor<'_>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let parts: [&[u8]; 3] = [
        anchor.subject.as_ref(),
        anchor.subject_public_key_info.as_ref(),
        anchor.name_constraints.as_deref().unwrap_or_default(),
    ];
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    // Absent name constraints differ from empty ones.
    hasher.update([u8::from(anchor.name_constraints.is_some())]);
    hasher.finalize().into()
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("certificates", &self.certs.len())
            .finish()
    }
}

/// Whether a certificate says it is a CA (basicConstraints cA=true), as every SPIFFE signing
/// certificate must (X509-SVID 4.1). A certificate that cannot be parsed is left to webpki,
/// which names the problem.
fn is_ca_certificate(der: &[u8]) -> bool {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca),
        Err(_) => true,
    }
}

/// Checks that `svid`'s chain validates against the bundle of its own trust domain in
/// `bundles`: a setup that fails this can never complete a handshake with a peer of that
/// domain, so it is refused when loaded rather than at the first connection.
///
/// Validity in time is not judged here (an expired SVID is the expiry gate's business): the
/// chain is checked at the latest not-before of its certificates.
pub(crate) fn check_own_chain(
    svid: &Svid,
    bundles: &TrustBundles,
    location: &Location,
) -> Result<(), ConfigError> {
    let trust_domain = svid.spiffe_id().trust_domain();
    let Some(bundle) = bundles.get(trust_domain) else {
        return Err(ConfigError::MissingOwnBundle {
            location: location.clone(),
            trust_domain: trust_domain.clone(),
        });
    };
    let chain = svid.chain();
    let not_trusted = |reason: String| ConfigError::SvidNotTrusted {
        location: location.clone(),
        trust_domain: trust_domain.clone(),
        reason,
    };
    let [leaf, intermediates @ ..] = chain else {
        return Err(not_trusted("the chain is empty".into()));
    };
    let at = crate::identity::chain_validity(chain.iter().map(|c| c.as_ref()))
        .and_then(|(not_before, _)| u64::try_from(not_before).ok())
        .map(|secs| {
            rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
        })
        .ok_or_else(|| not_trusted("a certificate of the chain cannot be parsed".into()))?;
    let provider = crate::crypto::default_provider()?;
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|cert| {
            cert.verify_for_usage(
                provider.signature_verification_algorithms.all,
                bundle.anchors(),
                intermediates,
                at,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map(|_| ())
        })
        .map_err(|e| not_trusted(e.to_string()))
}

/// The trust domain named by a CA certificate's SPIFFE URI SAN (`spiffe://td`), if it has one.
///
/// SPIRE and most SPIFFE CAs put the trust domain ID in their CA certificates; a bundle holding a
/// CA that names another trust domain is a misconfiguration worth refusing.
fn spiffe_trust_domain_of_ca(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => {
            let rest = uri.strip_prefix("spiffe://")?;
            Some(rest.split('/').next().unwrap_or(rest).to_ascii_lowercase())
        }
        _ => None,
    })
}

/// Trust bundles keyed by trust domain: one for the workload's own domain, and one per federated
/// domain. A peer is verified only against the bundle of the trust domain in its own SPIFFE ID.
#[derive(Clone, Default)]
pub struct TrustBundles {
    by_domain: HashMap<TrustDomain, TrustBundle>,
}

impl TrustBundles {
    /// An empty set: no peer can be verified.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the bundle of its trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.by_domain.insert(bundle.trust_domain.clone(), bundle);
    }

    /// Adds a bundle, builder style.
    pub fn with(mut self, bundle: TrustBundle) -> Self {
        self.insert(bundle);
        self
    }

    /// The bundle of `trust_domain`.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        self.by_domain.get(trust_domain)
    }

    /// All bundles, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &TrustBundle> {
        self.by_domain.values()
    }

    /// How many trust domains have a bundle.
    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    /// Whether no trust domain has a bundle.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

impl fmt::Debug for TrustBundles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_domain.values()).finish()
    }
}

/// A consistent credential snapshot: the workload's SVID and its trust bundles.
#[derive(Clone, Debug)]
pub struct Credentials {
    svid: Svid,
    bundles: TrustBundles,
}

impl Credentials {
    /// Combines an SVID and its trust bundles.
    pub fn new(svid: Svid, bundles: TrustBundles) -> Self {
        Self { svid, bundles }
    }

    /// The workload's own SVID.
    pub fn svid(&self) -> &Svid {
        &self.svid
    }

    /// The trust bundles.
    pub fn bundles(&self) -> &TrustBundles {
        &self.bundles
    }
}

pub(crate) fn parse_certificates(
    pem: &[u8],
    location: &Location,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::NotPem {
            location: location.clone(),
            problem: describe_pem_error(&e),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NotPem {
            location: location.clone(),
            problem: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

pub(crate) fn parse_private_key(
    pem: &[u8],
    location: &Location,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| ConfigError::NotPem {
        location: location.clone(),
        problem: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block found".into()
            }
            other => describe_pem_error(&other),
        },
    })
}

/// A PEM parse error in words: the parser's own message prints the offending line as a list
/// of byte values.
pub(crate) fn describe_pem_error(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    let text = |bytes: &[u8]| {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim();
        // Enough of the line to recognize it, not a whole file.
        match line.char_indices().nth(80) {
            Some((cut, _)) => format!("{:?}...", &line[..cut]),
            None => format!("{line:?}"),
        }
    };
    match error {
        E::MissingSectionEnd { end_marker } => format!(
            "a PEM block is not closed: no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker).trim()
        ),
        E::IllegalSectionStart { line } => {
            format!("malformed PEM block start line {}", text(line))
        }
        E::Base64Decode(reason) => format!("a PEM block's base64 content is corrupt: {reason}"),
        other => other.to_string(),
    }
}
