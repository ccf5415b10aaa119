//! The PROXY protocol version 2 header the tcp mode sends the backend first (`--proxy-protocol`),
//! carrying the caller's address and, in TLVs of the range the specification leaves to
//! applications (0xE0-0xEF), its authenticated SPIFFE ID.
//!
//! | TLV type | value |
//! |---|---|
//! | `0xE0` ([`TLV_SPIFFE_ID`]) | the caller's SPIFFE ID, UTF-8, as verified in the handshake |
//! | `0xE1` ([`TLV_LEAF_SHA256`]) | the SHA-256 of the caller's leaf certificate (DER), 32 bytes |

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The PROXY v2 signature (12 bytes).
pub(crate) const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// TLV: the caller's SPIFFE ID, UTF-8.
pub(crate) const TLV_SPIFFE_ID: u8 = 0xE0;
/// TLV: the SHA-256 of the caller's leaf certificate.
pub(crate) const TLV_LEAF_SHA256: u8 = 0xE1;

/// A PROXY v2 header (command PROXY, TCP) from `source` (the caller) to `destination` (the
/// address it connected to), with the TLVs.
pub(crate) fn header(
    source: SocketAddr,
    destination: SocketAddr,
    spiffe_id: &str,
    leaf_sha256: &[u8; 32],
) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    let mut addresses = Vec::with_capacity(36);
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            addresses.extend_from_slice(&v6(s).octets());
            addresses.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    let mut tlvs = Vec::new();
    push_tlv(&mut tlvs, TLV_SPIFFE_ID, spiffe_id.as_bytes());
    push_tlv(&mut tlvs, TLV_LEAF_SHA256, leaf_sha256);

    let length = addresses.len() + tlvs.len();
    let mut out = Vec::with_capacity(16 + length);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    out.push(family);
    // A SPIFFE ID is at most 2048 bytes, so the length always fits.
    out.extend_from_slice(&u16::try_from(length).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&addresses);
    out.extend_from_slice(&tlvs);
    out
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(value);
}

/// Both addresses in one family: IPv4 when both are (or map to) IPv4, else IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    (canonical(source), canonical(destination))
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_layout() {
        let header = header(
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:8443".parse().unwrap(),
            "spiffe://example.org/web",
            &[7; 32],
        );
        assert_eq!(&header[..12], &SIGNATURE);
        assert_eq!(header[12], 0x21);
        assert_eq!(header[13], 0x11);
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        assert_eq!(header.len(), 16 + length);
        assert_eq!(&header[16..20], &[10, 0, 0, 1]);
        assert_eq!(&header[24..26], &40000u16.to_be_bytes());
        assert_eq!(header[28], TLV_SPIFFE_ID);
        assert_eq!(&header[31..31 + 24], b"spiffe://example.org/web");
        assert_eq!(header[55], TLV_LEAF_SHA256);
    }

    #[test]
    fn mixed_families_become_ipv6_and_mapped_ipv4_becomes_ipv4() {
        let mixed = header(
            "10.0.0.1:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
            "spiffe://a/b",
            &[0; 32],
        );
        assert_eq!(mixed[13], 0x21);
        let mapped = header(
            "[::ffff:10.0.0.1]:1".parse().unwrap(),
            "[::ffff:10.0.0.2]:2".parse().unwrap(),
            "spiffe://a/b",
            &[0; 32],
        );
        assert_eq!(mapped[13], 0x11);
    }
}
