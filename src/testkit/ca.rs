//! A development certificate authority that mints X.509-SVIDs.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use spiffe::TrustDomain;

use crate::source::{Credentials, Svid, TrustBundle, TrustBundles};

/// Errors of the testkit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    /// The trust domain or SPIFFE ID is malformed.
    #[error("invalid trust domain or SPIFFE ID {input:?}: {reason}")]
    InvalidName {
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// The minted material was refused by the crate (expected for deliberately invalid SVIDs).
    #[error(transparent)]
    Credentials(#[from] crate::ConfigError),
    /// A saved CA ([`DevCa::from_pem`]) cannot be loaded.
    #[error("cannot load the development CA: {reason}")]
    InvalidCa {
        /// What is wrong with the certificate or key.
        reason: String,
    },
}

/// Key algorithms the development CA can mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default, as SPIRE's).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures.
    Rsa2048,
}

impl KeyAlgorithm {
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Self::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Self::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            Self::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// The extended key usage a minted SVID carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExtendedKeyUsage {
    /// serverAuth and clientAuth, as SPIFFE requires where the extension is present (default).
    #[default]
    ServerAndClient,
    /// serverAuth only (not a valid SVID).
    ServerOnly,
    /// clientAuth only (not a valid SVID).
    ClientOnly,
    /// No extension at all (valid: the extension is optional).
    Absent,
}

/// A development CA for one trust domain: a self-signed root, or an intermediate under one.
///
/// ```
/// use secure_channel::testkit::DevCa;
///
/// let ca = DevCa::new("example.org")?;
/// let issued = ca.svid("spiffe://example.org/api").issue()?;
/// assert_eq!(issued.chain().len(), 1);
/// # Ok::<(), secure_channel::testkit::TestkitError>(())
/// ```
pub struct DevCa {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    /// Intermediates between this CA and the root, this CA first (empty for a root).
    intermediates: Vec<CertificateDer<'static>>,
    root: CertificateDer<'static>,
    /// This CA certificate's serial number.
    serial: Vec<u8>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("depth", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

fn ca_params(trust_domain: &TrustDomain, name: &str) -> Result<CertificateParams, TestkitError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.remove(DnType::CommonName);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "secure-channel testkit");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(ia5(&trust_domain.id_string())?)];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
    Ok(params)
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, TestkitError> {
    rcgen::string::Ia5String::try_from(s).map_err(|e| TestkitError::InvalidName {
        input: s.to_owned(),
        reason: e.to_string(),
    })
}

fn serial_for(key: &KeyPair) -> SerialNumber {
    let digest = Sha256::digest(key.serialize_der());
    let mut bytes = digest[..16].to_vec();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

impl DevCa {
    /// A new self-signed root CA for `trust_domain` (ECDSA P-256, valid for a year), whose
    /// certificate carries the trust domain ID as URI SAN as SPIRE's do.
    pub fn new(trust_domain: &str) -> Result<Self, TestkitError> {
        let td = TrustDomain::new(trust_domain).map_err(|e| TestkitError::InvalidName {
            input: trust_domain.to_owned(),
            reason: e.to_string(),
        })?;
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let serial = serial_for(&key);
        // A distinct name per CA, so two development CAs of one trust domain never look like
        // issuers of each other's certificates.
        let tag: String = serial.to_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = ca_params(&td, &format!("{td} root CA {tag}"))?;
        let serial_bytes = serial.to_bytes();
        params.serial_number = Some(serial);
        let cert = params.self_signed(&key)?.der().clone();
        Ok(Self {
            trust_domain: td,
            issuer: Issuer::new(params, key),
            root: cert.clone(),
            cert,
            intermediates: Vec::new(),
            serial: serial_bytes,
        })
    }

    /// Loads a root CA saved from [`certificate_pem`](Self::certificate_pem) and
    /// [`key_pem`](Self::key_pem) (as `secure-channel dev-ca init` does), to mint more SVIDs
    /// with it. The trust domain is the certificate's URI SAN; the key must be the
    /// certificate's.
    ///
    /// ```
    /// use secure_channel::testkit::DevCa;
    ///
    /// let ca = DevCa::new("example.org")?;
    /// let again = DevCa::from_pem(&ca.certificate_pem(), &ca.key_pem())?;
    /// let svid = again.svid("spiffe://example.org/api").issue()?;
    /// assert!(svid.to_svid().is_ok());
    /// assert_eq!(again.bundle_pem(), ca.bundle_pem());
    /// # Ok::<(), secure_channel::testkit::TestkitError>(())
    /// ```
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TestkitError> {
        let invalid = |reason: String| TestkitError::InvalidCa { reason };
        let block =
            pem::parse(cert_pem).map_err(|e| invalid(format!("certificate: not PEM: {e}")))?;
        if block.tag() != "CERTIFICATE" {
            return Err(invalid(format!(
                "certificate: expected a CERTIFICATE block, found {}",
                block.tag()
            )));
        }
        let cert = CertificateDer::from(block.into_contents());
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("key: {e}")))?;
        let (trust_domain, serial) = {
            use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
            let (_, parsed) = X509Certificate::from_der(cert.as_ref())
                .map_err(|e| invalid(format!("certificate: {e}")))?;
            if parsed.subject_pki.raw
                != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
            {
                return Err(invalid("the key is not the certificate's".into()));
            }
            if parsed.subject() != parsed.issuer() || !parsed.is_ca() {
                return Err(invalid(
                    "the certificate is not a self-signed root CA".into(),
                ));
            }
            let uri = parsed
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|name| match name {
                        GeneralName::URI(uri) => Some(*uri),
                        _ => None,
                    })
                })
                .ok_or_else(|| {
                    invalid("the certificate has no URI SAN naming its trust domain".into())
                })?;
            let id = spiffe::SpiffeId::new(format!("{uri}/ca")).map_err(|e| {
                TestkitError::InvalidName {
                    input: uri.to_owned(),
                    reason: e.to_string(),
                }
            })?;
            (id.trust_domain().clone(), parsed.raw_serial().to_vec())
        };
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Self {
            trust_domain,
            issuer,
            root: cert.clone(),
            cert,
            intermediates: Vec::new(),
            serial,
        })
    }

    /// This CA's certificate as PEM (for a root, the same as [`bundle_pem`](Self::bundle_pem)).
    pub fn certificate_pem(&self) -> String {
        pem_certificates(std::slice::from_ref(&self.cert))
    }

    /// This CA's private key as PKCS#8 PEM: whoever holds it can mint SVIDs of the trust
    /// domain. For development only.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// An intermediate CA signed by this one; SVIDs it issues carry it in their chain.
    pub fn intermediate(&self) -> Result<Self, TestkitError> {
        self.intermediate_with_key_usage(None)
    }

    /// An intermediate CA (basicConstraints cA=true) whose key usage lacks keyCertSign
    /// (digitalSignature and cRLSign only): not a valid signing certificate (X509-SVID 4.3), so
    /// chains through it must be refused.
    pub fn intermediate_without_key_cert_sign(&self) -> Result<Self, TestkitError> {
        self.intermediate_with_key_usage(Some(vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ]))
    }

    /// An intermediate CA without a key usage extension at all: not a valid signing
    /// certificate either.
    pub fn intermediate_without_key_usage(&self) -> Result<Self, TestkitError> {
        self.intermediate_with_key_usage(Some(Vec::new()))
    }

    fn intermediate_with_key_usage(
        &self,
        key_usages: Option<Vec<KeyUsagePurpose>>,
    ) -> Result<Self, TestkitError> {
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let depth = self.intermediates.len() + 1;
        let mut params = ca_params(
            &self.trust_domain,
            &format!("{} intermediate CA {depth}", self.trust_domain),
        )?;
        if let Some(key_usages) = key_usages {
            params.key_usages = key_usages;
        }
        let serial = serial_for(&key);
        let serial_bytes = serial.to_bytes();
        params.serial_number = Some(serial);
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        let mut intermediates = vec![cert.clone()];
        intermediates.extend(self.intermediates.iter().cloned());
        Ok(Self {
            trust_domain: self.trust_domain.clone(),
            issuer: Issuer::new(params, key),
            cert,
            intermediates,
            root: self.root.clone(),
            serial: serial_bytes,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// This CA's own certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// This CA certificate's serial number (big-endian bytes): what the CRL of its issuer
    /// names to revoke an intermediate.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// Starts minting a certificate revocation list (CRL) signed by this CA that revokes the
    /// certificates with `revoked_serials` (such as [`IssuedSvid::serial`], or an
    /// intermediate's [`DevCa::serial`]); valid from a minute ago for a day unless set.
    ///
    /// ```
    /// use secure_channel::testkit::DevCa;
    ///
    /// let ca = DevCa::new("example.org")?;
    /// let svid = ca.svid("spiffe://example.org/web").issue()?;
    /// let der = ca.crl(&[svid.serial()]).der()?;
    /// let pem = ca.crl(&[svid.serial()]).pem()?;
    /// assert!(pem.starts_with("-----BEGIN X509 CRL-----"));
    /// # let _ = der;
    /// # Ok::<(), secure_channel::testkit::TestkitError>(())
    /// ```
    pub fn crl(&self, revoked_serials: &[&[u8]]) -> CrlBuilder<'_> {
        let now = SystemTime::now();
        CrlBuilder {
            ca: self,
            revoked: revoked_serials.iter().map(|s| s.to_vec()).collect(),
            this_update: now - Duration::from_secs(60),
            next_update: now + Duration::from_secs(24 * 3600),
            number: 1,
        }
    }

    /// The root certificate: the content of the trust domain's bundle.
    pub fn root_certificate(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The trust bundle of this CA's trust domain (its root).
    pub fn bundle(&self) -> Result<TrustBundle, TestkitError> {
        Ok(TrustBundle::from_der(
            self.trust_domain.clone(),
            vec![self.root.clone()],
        )?)
    }

    /// The bundle as PEM.
    pub fn bundle_pem(&self) -> String {
        pem_certificates(std::slice::from_ref(&self.root))
    }

    /// Starts minting an SVID for `spiffe_id` (any string: deliberately invalid SVIDs can be
    /// minted too, for testing refusals).
    pub fn svid(&self, spiffe_id: &str) -> SvidBuilder<'_> {
        let now = SystemTime::now();
        SvidBuilder {
            ca: self,
            uris: vec![spiffe_id.to_owned()],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            common_name: None,
            key_algorithm: KeyAlgorithm::default(),
            not_before: now - Duration::from_secs(300),
            not_after: now + Duration::from_secs(3600),
            is_ca: false,
            digital_signature: true,
            key_cert_sign: false,
            crl_sign: false,
            key_usage: true,
            eku: ExtendedKeyUsage::default(),
        }
    }

    /// Mints a valid SVID for `spiffe_id` and wraps it, with this trust domain's bundle, as a
    /// Workload API response for [`WorkloadApiServer`](crate::testkit::WorkloadApiServer).
    pub fn workload_api_response(
        &self,
        spiffe_id: &str,
    ) -> Result<(crate::testkit::X509SvidResponse, IssuedSvid), TestkitError> {
        let issued = self.svid(spiffe_id).issue()?;
        let response = crate::testkit::X509SvidResponse::new(
            spiffe_id,
            issued.chain().to_vec(),
            issued.key().clone_key(),
            vec![self.root.clone()],
        );
        Ok((response, issued))
    }

    /// Mints a valid SVID for `spiffe_id` and pairs it with this trust domain's bundle.
    pub fn credentials(&self, spiffe_id: &str) -> Result<Credentials, TestkitError> {
        let svid = self.svid(spiffe_id).issue()?.to_svid()?;
        Ok(Credentials::new(
            svid,
            TrustBundles::new().with(self.bundle()?),
        ))
    }
}

/// Options of one CRL to mint; [`der`](Self::der) or [`pem`](Self::pem) signs it.
#[derive(Debug)]
#[must_use]
pub struct CrlBuilder<'a> {
    ca: &'a DevCa,
    revoked: Vec<Vec<u8>>,
    this_update: SystemTime,
    next_update: SystemTime,
    number: u64,
}

impl CrlBuilder<'_> {
    /// When the CRL was issued (default: a minute ago).
    pub fn this_update(mut self, time: SystemTime) -> Self {
        self.this_update = time;
        self
    }

    /// When the next CRL is due (default: in a day); a time in the past makes an expired CRL.
    /// Must be after [`this_update`](Self::this_update).
    pub fn next_update(mut self, time: SystemTime) -> Self {
        self.next_update = time;
        self
    }

    /// The CRL number (default 1).
    pub fn number(mut self, number: u64) -> Self {
        self.number = number;
        self
    }

    fn sign(&self) -> Result<rcgen::CertificateRevocationList, TestkitError> {
        let revoked_certs = self
            .revoked
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: self.this_update.into(),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: self.this_update.into(),
            next_update: self.next_update.into(),
            crl_number: SerialNumber::from(self.number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.ca.issuer)?)
    }

    /// Signs the CRL: DER.
    pub fn der(&self) -> Result<Vec<u8>, TestkitError> {
        Ok(self.sign()?.der().to_vec())
    }

    /// Signs the CRL: one PEM `X509 CRL` block.
    pub fn pem(&self) -> Result<String, TestkitError> {
        Ok(pem_block("X509 CRL", &self.der()?))
    }
}

/// Options of one SVID to mint; [`issue`](Self::issue) signs it.
#[derive(Debug)]
#[must_use]
pub struct SvidBuilder<'a> {
    ca: &'a DevCa,
    uris: Vec<String>,
    dns_names: Vec<String>,
    ip_addresses: Vec<std::net::IpAddr>,
    common_name: Option<String>,
    key_algorithm: KeyAlgorithm,
    not_before: SystemTime,
    not_after: SystemTime,
    is_ca: bool,
    digital_signature: bool,
    key_cert_sign: bool,
    crl_sign: bool,
    key_usage: bool,
    eku: ExtendedKeyUsage,
}

impl SvidBuilder<'_> {
    /// The key algorithm (default ECDSA P-256).
    pub fn key_algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        self.key_algorithm = algorithm;
        self
    }

    /// The validity period (default: from 5 minutes ago for an hour).
    pub fn validity(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Adds another URI SAN (an SVID has exactly one, so this makes an invalid SVID).
    pub fn extra_uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_owned());
        self
    }

    /// Removes every URI SAN (with [`dns_name`](Self::dns_name), a plain TLS certificate).
    pub fn without_uri(mut self) -> Self {
        self.uris.clear();
        self
    }

    /// Adds a common name to the subject (default: `O=secure-channel testkit` only), for
    /// servers that identify clients by subject DN, such as Keycloak's X.509 client
    /// authenticator: the subject becomes `CN=<name>, O=secure-channel testkit`.
    pub fn common_name(mut self, name: &str) -> Self {
        self.common_name = Some(name.to_owned());
        self
    }

    /// Adds a DNS SAN.
    pub fn dns_name(mut self, name: &str) -> Self {
        self.dns_names.push(name.to_owned());
        self
    }

    /// Adds an IP address SAN (for plain WebPKI servers in tests, such as a JWKS endpoint).
    pub fn ip_address(mut self, ip: std::net::IpAddr) -> Self {
        self.ip_addresses.push(ip);
        self
    }

    /// Marks the leaf as a CA (basicConstraints cA=true): not a valid SVID.
    pub fn as_ca(mut self) -> Self {
        self.is_ca = true;
        self
    }

    /// Adds keyCertSign to the key usage: not a valid SVID.
    pub fn with_key_cert_sign(mut self) -> Self {
        self.key_cert_sign = true;
        self
    }

    /// Adds cRLSign to the key usage: not a valid SVID.
    pub fn with_crl_sign(mut self) -> Self {
        self.crl_sign = true;
        self
    }

    /// Leaves the key usage extension out: not a valid SVID.
    pub fn without_key_usage(mut self) -> Self {
        self.key_usage = false;
        self
    }

    /// Leaves digitalSignature out of the key usage (keyAgreement stands in): not a valid SVID.
    pub fn without_digital_signature(mut self) -> Self {
        self.digital_signature = false;
        self
    }

    /// The extended key usage extension (default serverAuth and clientAuth).
    pub fn extended_key_usage(mut self, eku: ExtendedKeyUsage) -> Self {
        self.eku = eku;
        self
    }

    /// Signs the SVID.
    pub fn issue(self) -> Result<IssuedSvid, TestkitError> {
        let key = self.key_algorithm.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "secure-channel testkit");
        if let Some(name) = &self.common_name {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.serial_number = Some(serial_for(&key));
        for uri in &self.uris {
            params.subject_alt_names.push(SanType::URI(ia5(uri)?));
        }
        for name in &self.dns_names {
            params.subject_alt_names.push(SanType::DnsName(ia5(name)?));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        params.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        if self.digital_signature {
            params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        }
        if self.key_cert_sign {
            params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        }
        if self.crl_sign {
            params.key_usages.push(KeyUsagePurpose::CrlSign);
        }
        if !self.digital_signature {
            params.key_usages.push(KeyUsagePurpose::KeyAgreement);
        }
        if !self.key_usage {
            params.key_usages.clear();
        }
        params.extended_key_usages = match self.eku {
            ExtendedKeyUsage::ServerAndClient => {
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            }
            ExtendedKeyUsage::ServerOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
            ExtendedKeyUsage::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
            ExtendedKeyUsage::Absent => Vec::new(),
        };
        params.use_authority_key_identifier_extension = true;
        let serial = params
            .serial_number
            .as_ref()
            .map(SerialNumber::to_bytes)
            .unwrap_or_default();
        let leaf = params.signed_by(&key, &self.ca.issuer)?.der().clone();
        let mut chain = vec![leaf];
        chain.extend(self.ca.intermediates.iter().cloned());
        Ok(IssuedSvid {
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            serial,
        })
    }
}

/// A minted SVID: chain (leaf first, then intermediates) and PKCS#8 private key.
pub struct IssuedSvid {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    serial: Vec<u8>,
}

impl std::fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("chain_len", &self.chain.len())
            .field("serial", &self.serial)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl IssuedSvid {
    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The private key, PKCS#8 DER.
    pub fn key(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.key
    }

    /// The leaf's serial number (big-endian bytes).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The chain as PEM.
    pub fn chain_pem(&self) -> String {
        pem_certificates(&self.chain)
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem_block("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    /// The same SVID without its intermediates (as a misconfigured peer would send it).
    pub fn clone_leaf_only(&self) -> Self {
        Self {
            chain: vec![self.chain[0].clone()],
            key: self.key.clone_key(),
            serial: self.serial.clone(),
        }
    }

    /// Validates it as this crate's [`Svid`].
    pub fn to_svid(&self) -> Result<Svid, crate::ConfigError> {
        Svid::from_der(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

fn pem_certificates(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}
