//! Certificate revocation lists (CRLs): a live set, from code or from files that reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use webpki::{CertRevocationList, OwnedCertRevocationList};

use crate::error::Location;
use crate::reload::{Contents, FileWatch, Live};
use crate::revocation::{LoggedWriter, RevocationError, Summary, notices_accessors};
use crate::source::describe_pem_error;

/// What marks a PEM CRL; input without it is read as DER.
const PEM_MARKER: &[u8] = b"-----BEGIN X509 CRL-----";

/// A live, cloneable set of X.509 certificate revocation lists (CRLs), checked on every
/// handshake of the channels given it with
/// [`SecureChannelBuilder::revocation_lists`](crate::SecureChannelBuilder::revocation_lists).
///
/// Lists come from code ([`new`](Self::new), then [`replace`](Self::replace)) or from files
/// that are followed ([`from_files`](Self::from_files)). Each input holds CRLs in DER (one) or
/// PEM (any number of `X509 CRL` blocks). Cheap to clone: clones share the lists.
///
/// ```
/// # #[cfg(feature = "testkit")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use secure_channel::revocation::RevocationLists;
/// use secure_channel::testkit::DevCa;
/// use secure_channel::{MemorySource, SecureChannel};
///
/// let ca = DevCa::new("example.org")?;
/// let stolen = ca.svid("spiffe://example.org/web").issue()?;
/// // The CA's CRL naming the stolen SVID's serial number (in production: the CA's CRL file,
/// // `RevocationLists::from_files(["/etc/ca/crl.pem"]).start()?`).
/// let lists = RevocationLists::new([ca.crl(&[stolen.serial()]).der()?])?;
/// assert_eq!(lists.revision(), 1);
///
/// let source = MemorySource::new(ca.credentials("spiffe://example.org/api")?);
/// let server = SecureChannel::builder(&source)
///     .allow_client("spiffe://example.org/web")
///     .revocation_lists(&lists)
///     .build()?;
/// // Revoking one more later reaches the next handshake.
/// let other = ca.svid("spiffe://example.org/web").issue()?;
/// lists.replace([ca.crl(&[stolen.serial(), other.serial()]).der()?])?;
/// assert_eq!(lists.revision(), 2);
/// # drop(server);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "testkit"))]
/// # fn main() {}
/// ```
///
/// # Security
///
/// - **Bound to its CA, hence to its trust domain.** A CRL applies to a certificate only when
///   the CRL's issuer name is the certificate's issuer name, and then its signature must verify
///   with the key of that issuer on the validated path (and the issuer must assert keyUsage
///   cRLSign), or the chain is refused. Since a chain is validated only against the bundle of
///   the trust domain in the peer's own SPIFFE ID, a CRL can only ever revoke certificates of
///   the CA that signed it, and so of that CA's trust domain: no trust-domain argument is
///   needed, and a list of one domain can never revoke another's peers.
/// - **Whole chain.** The leaf and every intermediate on the path are checked; revoking an
///   intermediate refuses every certificate it issued.
/// - **Opt-in per CA.** A certificate whose issuer has no list here is accepted (unknown status
///   is allowed): lists are given for the CAs that publish them, and SVIDs are short-lived.
/// - **Expired lists fail closed.** A list past its nextUpdate time refuses every chain through
///   its issuer ([`ChainError::RevocationListExpired`](crate::identity::ChainError)), as
///   OpenSSL and nginx do, until a current list is loaded; a list that cannot be used (bad
///   signature, issuer without cRLSign) refuses them too. [`ignore_next_update`](Self::ignore_next_update)
///   opts out of the first.
/// - A reload that does not parse keeps the last good lists (logged, counted in
///   [`failed_reloads`](Self::failed_reloads)); an empty file is refused, never read as
///   "nothing revoked".
#[derive(Clone)]
pub struct RevocationLists {
    live: Live<CrlSet>,
    writer: LoggedWriter<CrlSet>,
    enforce_next_update: bool,
    files: Option<Arc<[PathBuf]>>,
}

/// The parsed lists of one revision.
pub(crate) struct CrlSet {
    lists: Vec<CertRevocationList<'static>>,
    /// The earliest nextUpdate among the lists.
    next_update: Option<SystemTime>,
}

impl Summary for CrlSet {
    fn len(&self) -> usize {
        self.lists.len()
    }
}

impl CrlSet {
    /// The lists, as rustls-webpki takes them.
    pub(crate) fn lists(&self) -> Vec<&CertRevocationList<'static>> {
        self.lists.iter().collect()
    }

    /// The earliest nextUpdate among the lists.
    pub(crate) fn next_update(&self) -> Option<SystemTime> {
        self.next_update
    }
}

impl RevocationLists {
    /// Lists from code: each item one CRL in DER, or PEM text with one or more `X509 CRL`
    /// blocks. None at all is allowed (nothing revoked until [`replace`](Self::replace)d).
    ///
    /// nextUpdate is enforced; see [`ignore_next_update`](Self::ignore_next_update).
    pub fn new<I, D>(crls: I) -> Result<Self, RevocationError>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u8]>,
    {
        let set = parse_all(crls)?;
        Ok(Self::with_set(set, None))
    }

    fn with_set(set: CrlSet, files: Option<Arc<[PathBuf]>>) -> Self {
        let (live, writer) = Live::new("revocation", "revocation lists", set);
        Self {
            live,
            writer: LoggedWriter::new(writer),
            enforce_next_update: true,
            files,
        }
    }

    /// Lists from files that are followed: each file holds one DER CRL or any number of PEM
    /// `X509 CRL` blocks.
    pub fn from_files<I, P>(paths: I) -> RevocationFilesBuilder
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        RevocationFilesBuilder {
            paths: paths.into_iter().map(Into::into).collect(),
            poll_interval: Duration::from_secs(1),
            enforce_next_update: true,
        }
    }

    /// Accepts lists past their nextUpdate time as if they were current (weaker: a CA that
    /// stopped publishing leaves its last list in force forever). By default such a list
    /// refuses every chain through its issuer. Applies to this handle and the clones made from
    /// it afterwards: call it before handing the lists to a channel.
    #[must_use]
    pub fn ignore_next_update(mut self) -> Self {
        self.enforce_next_update = false;
        self
    }

    /// Whether nextUpdate is enforced (the default).
    pub fn enforces_next_update(&self) -> bool {
        self.enforce_next_update
    }

    /// Replaces the lists (same input forms as [`new`](Self::new)); on error nothing changes.
    /// On lists that follow files, the files' next change replaces these in turn.
    pub fn replace<I, D>(&self, crls: I) -> Result<(), RevocationError>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u8]>,
    {
        let set = parse_all(crls)?;
        self.writer.publish_value(set);
        Ok(())
    }

    /// How many lists are in force.
    pub fn len(&self) -> usize {
        self.live.load().lists.len()
    }

    /// Whether no list is in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    notices_accessors!("lists");

    /// The earliest nextUpdate among the current lists: when (with nextUpdate enforced) a
    /// list starts refusing chains unless replaced. For the re-check of live connections.
    #[cfg_attr(
        not(all(test, feature = "testkit")),
        expect(dead_code, reason = "read by the live-connection re-check sweeper")
    )]
    pub(crate) fn earliest_next_update(&self) -> Option<SystemTime> {
        self.live.load().next_update()
    }

    /// The revision and the lists of that revision (or newer): read in that order, so a
    /// cache keyed by the revision never holds a result of older lists under a newer revision.
    pub(crate) fn snapshot(&self) -> (u64, arc_swap::Guard<Arc<CrlSet>>) {
        let revision = self.revision();
        (revision, self.live.load())
    }
}

impl std::fmt::Debug for RevocationLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationLists")
            .field("files", &self.files)
            .field("revision", &self.revision())
            .field("lists", &self.len())
            .field("enforce_next_update", &self.enforce_next_update)
            .finish()
    }
}

/// Loads CRL files and follows their changes.
///
/// The files are polled (every second by default) and compared by content, which catches every
/// way of replacing them (write-then-rename, Kubernetes ConfigMap symlink swaps); content is
/// used only once two reads a short wait apart agree. A change is applied only when every file
/// parses; otherwise the last good lists stay in force, a warning says why, and
/// [`RevocationLists::failed_reloads`] counts it.
#[derive(Debug, Clone)]
#[must_use]
pub struct RevocationFilesBuilder {
    paths: Vec<PathBuf>,
    poll_interval: Duration,
    enforce_next_update: bool,
}

impl RevocationFilesBuilder {
    /// How often the files are checked (default 1 s, at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// See [`RevocationLists::ignore_next_update`].
    pub fn ignore_next_update(mut self) -> Self {
        self.enforce_next_update = false;
        self
    }

    /// Loads the files now (any problem is an error naming the file) and starts following
    /// them.
    pub fn start(self) -> Result<RevocationLists, RevocationError> {
        let paths: Arc<[PathBuf]> = self.paths.clone().into();
        let parse_paths = paths.clone();
        let enforce_next_update = self.enforce_next_update;
        FileWatch::new(self.paths, self.poll_interval).start(
            "secure-channel-revocation",
            move |contents| parse_files(&parse_paths, contents),
            |set| {
                let mut lists = RevocationLists::with_set(set, Some(paths));
                lists.enforce_next_update = enforce_next_update;
                let writer = lists.writer.clone();
                (lists, writer)
            },
        )
    }
}

fn parse_files(paths: &[PathBuf], contents: &Contents) -> Result<CrlSet, RevocationError> {
    let mut set = CrlSet {
        lists: Vec::new(),
        next_update: None,
    };
    for (path, bytes) in paths.iter().zip(contents) {
        let location = Location::File(path.clone());
        let found = parse_crls(bytes, &location)?;
        if found.is_empty() {
            return Err(RevocationError::NoCrl { location });
        }
        set.extend(found);
    }
    Ok(set)
}

fn parse_all<I, D>(crls: I) -> Result<CrlSet, RevocationError>
where
    I: IntoIterator<Item = D>,
    D: AsRef<[u8]>,
{
    let mut set = CrlSet {
        lists: Vec::new(),
        next_update: None,
    };
    for input in crls {
        let location = Location::Field("crls");
        let found = parse_crls(input.as_ref(), &location)?;
        if found.is_empty() {
            return Err(RevocationError::NoCrl { location });
        }
        set.extend(found);
    }
    Ok(set)
}

impl CrlSet {
    fn extend(&mut self, found: Vec<(OwnedCertRevocationList, SystemTime)>) {
        for (list, next_update) in found {
            self.lists.push(CertRevocationList::Owned(list));
            self.next_update = Some(match self.next_update {
                Some(earliest) => earliest.min(next_update),
                None => next_update,
            });
        }
    }
}

/// The CRLs of one input (PEM when it holds the `X509 CRL` marker, else one DER CRL), each
/// with its nextUpdate.
pub(crate) fn parse_crls(
    input: &[u8],
    location: &Location,
) -> Result<Vec<(OwnedCertRevocationList, SystemTime)>, RevocationError> {
    let ders: Vec<CertificateRevocationListDer<'_>> = if is_pem(input) {
        CertificateRevocationListDer::pem_slice_iter(input)
            .collect::<Result<_, _>>()
            .map_err(|e| RevocationError::NotPem {
                location: location.clone(),
                problem: describe_pem_error(&e),
            })?
    } else if input.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        vec![CertificateRevocationListDer::from(input)]
    };
    ders.iter()
        .enumerate()
        .map(|(index, der)| {
            let invalid = |reason: String| RevocationError::InvalidCrl {
                location: location.clone(),
                index,
                reason,
            };
            let list = OwnedCertRevocationList::from_der(der.as_ref())
                .map_err(|e| invalid(e.to_string()))?;
            let next_update = next_update(der.as_ref()).map_err(invalid)?;
            Ok((list, next_update))
        })
        .collect()
}

fn is_pem(input: &[u8]) -> bool {
    input
        .windows(PEM_MARKER.len())
        .any(|window| window == PEM_MARKER)
}

/// The nextUpdate of a CRL rustls-webpki accepted (which does not expose it).
fn next_update(der: &[u8]) -> Result<SystemTime, String> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|e| e.to_string())?;
    let next = crl.next_update().ok_or("no nextUpdate")?;
    let seconds = u64::try_from(next.timestamp()).map_err(|_| "nextUpdate before 1970")?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}
