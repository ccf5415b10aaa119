//! What goes wrong on one connection: the handshake, or reaching the peer.

use std::io;

use crate::identity::PeerRejection;

/// A connection that could not be established securely.
///
/// [`kind`](Self::kind) sorts it for handling (retry, alert, give up); the message says what
/// happened and, where this workload can fix it, what to check. Like
/// [`ConfigError`](crate::ConfigError), each message already includes its cause, so no further
/// [`source`](std::error::Error::source) is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// This workload refused the peer's certificate, during the handshake or after a resumed
    /// one (on a client: the server's; on a server: the client's).
    #[error("peer's certificate refused: {0}")]
    PeerRejected(PeerRejection),
    /// The server refused this workload's SVID: it answered with a TLS alert about the client's
    /// certificate (`access_denied`: authenticated but not allowed; `unknown_ca`: not trusted;
    /// `bad_certificate` and others: not valid). In TLS 1.3 that alert comes just after the
    /// handshake; the client waits briefly for the server's first record to report it here.
    #[error(
        "the server refused this workload's SVID {own_id} with TLS alert {}: {}",
        crate::tls::refusal_advice(*alert).0,
        crate::tls::refusal_advice(*alert).1
    )]
    RefusedByServer {
        /// This workload's own SPIFFE ID, the one it presented.
        own_id: spiffe::SpiffeId,
        /// The alert the server sent.
        alert: rustls::AlertDescription,
    },
    /// No TCP connection could be made (the address does not resolve, nobody listens, the
    /// network is unreachable): no TLS was spoken.
    #[error("cannot connect to {address}: {error}")]
    Connect {
        /// The address as given (`host:port`).
        address: String,
        /// The I/O error.
        error: io::Error,
    },
    /// The request's URI does not name a server that can be called (no host, or a host that is
    /// neither a DNS name nor an IP address).
    #[error("cannot call {uri}: {problem}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The TLS handshake failed for another reason (I/O error, alert from the peer, protocol
    /// mismatch such as a TLS 1.2-only peer).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The channel's own SVID has expired: no handshake is made with expired credentials until
    /// the source delivers valid ones.
    #[error(
        "own SVID {spiffe_id} expired at {not_after:?}: refusing new handshakes until valid credentials arrive"
    )]
    CredentialsExpired {
        /// The SVID's SPIFFE ID.
        spiffe_id: spiffe::SpiffeId,
        /// When it expired.
        not_after: std::time::SystemTime,
    },
    /// The connection or its handshake did not finish in time.
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
}

/// The sort of a [`ConnectionError`], for code that handles errors by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionErrorKind {
    /// This workload refused the peer's certificate ([`ConnectionError::PeerRejected`]).
    PeerRejected,
    /// The peer refused this workload's certificate ([`ConnectionError::RefusedByServer`]).
    RefusedByPeer,
    /// The peer could not be reached ([`ConnectionError::Connect`]).
    Unreachable,
    /// The target given cannot be called ([`ConnectionError::InvalidUri`]).
    InvalidTarget,
    /// Out of time ([`ConnectionError::HandshakeTimeout`]).
    Timeout,
    /// This workload's own SVID has expired ([`ConnectionError::CredentialsExpired`]).
    CredentialsExpired,
    /// The peers did not agree on TLS: a protocol mismatch, a malformed message, or an alert
    /// other than a refusal of this workload's certificate.
    Protocol,
    /// The transport failed during the handshake (reset, closed).
    Io,
}

impl ConnectionError {
    /// The sort of this error.
    pub fn kind(&self) -> ConnectionErrorKind {
        use ConnectionErrorKind as K;
        match self {
            Self::PeerRejected(_) => K::PeerRejected,
            Self::RefusedByServer { .. } => K::RefusedByPeer,
            Self::Connect { .. } => K::Unreachable,
            Self::InvalidUri { .. } => K::InvalidTarget,
            Self::HandshakeTimeout => K::Timeout,
            Self::CredentialsExpired { .. } => K::CredentialsExpired,
            Self::Handshake(error) => match rustls_error(error) {
                Some(_) => K::Protocol,
                None => K::Io,
            },
        }
    }

    /// A short, bounded label for metrics: the refusal's reason, or the failure's.
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            Self::PeerRejected(rejection) => rejection.metric_reason(),
            Self::HandshakeTimeout => "timeout",
            Self::CredentialsExpired { .. } => "credentials_expired",
            Self::Connect { .. } => "connect",
            Self::InvalidUri { .. } => "invalid_uri",
            Self::RefusedByServer { .. } => "refused_by_server",
            Self::Handshake(error) => match rustls_error(error) {
                Some(rustls::Error::PeerIncompatible(_)) => "protocol",
                Some(rustls::Error::AlertReceived(_)) => "alert_received",
                Some(
                    rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. },
                ) => "invalid_message",
                Some(_) => "tls",
                None => "io",
            },
        }
    }
}

impl From<PeerRejection> for ConnectionError {
    fn from(rejection: PeerRejection) -> Self {
        Self::PeerRejected(rejection)
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if it carries one.
fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_sort_handshake_failures_by_what_carried_them() {
        let tls = ConnectionError::Handshake(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        ));
        assert_eq!(tls.kind(), ConnectionErrorKind::Protocol);
        assert_eq!(tls.metric_reason(), "alert_received");
        let io = ConnectionError::Handshake(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(io.kind(), ConnectionErrorKind::Io);
        assert_eq!(io.metric_reason(), "io");
        let refused = ConnectionError::from(PeerRejection::NoCertificate);
        assert_eq!(refused.kind(), ConnectionErrorKind::PeerRejected);
        assert_eq!(refused.metric_reason(), "no_certificate");
        assert_eq!(
            ConnectionError::HandshakeTimeout.kind(),
            ConnectionErrorKind::Timeout
        );
    }
}
