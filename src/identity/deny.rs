//! What a deny-list names: a SPIFFE ID, or one leaf certificate by its SHA-256.

use std::fmt;

use spiffe::SpiffeId;

/// One entry of a deny-list: a peer refused even though its chain validates.
///
/// Displayed as the deny-list file format writes it: the SPIFFE ID (`spiffe://td/path`), or
/// `sha256:` followed by the 64 lowercase hex digits of the SHA-256 of the leaf certificate's
/// DER (the value [`PeerIdentity::thumbprint_sha256`](crate::PeerIdentity::thumbprint_sha256)
/// returns).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DenyEntry {
    /// Every certificate that carries exactly this SPIFFE ID.
    SpiffeId(SpiffeId),
    /// The one leaf certificate whose DER has this SHA-256 digest.
    CertificateSha256([u8; 32]),
}

impl fmt::Display for DenyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SpiffeId(id) => write!(f, "{id}"),
            Self::CertificateSha256(digest) => {
                f.write_str("sha256:")?;
                digest.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl From<SpiffeId> for DenyEntry {
    fn from(id: SpiffeId) -> Self {
        Self::SpiffeId(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entries_display_in_the_file_format() {
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        assert_eq!(
            DenyEntry::SpiffeId(id).to_string(),
            "spiffe://example.org/web"
        );
        let mut digest = [0u8; 32];
        digest[0] = 0xab;
        digest[31] = 0x01;
        assert_eq!(
            DenyEntry::CertificateSha256(digest).to_string(),
            format!("sha256:ab{}01", "00".repeat(30))
        );
    }
}
