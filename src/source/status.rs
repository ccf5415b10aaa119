//! Whether the workload's own SVID may still be presented.

use std::time::{Duration, SystemTime};

use crate::source::Svid;

/// The state of the workload's own SVID, for health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialStatus {
    /// Valid, and not close to expiry.
    Valid {
        /// When the SVID expires.
        not_after: SystemTime,
    },
    /// Valid, but expiring within the warning period without having been rotated.
    ExpiringSoon {
        /// When the SVID expires.
        not_after: SystemTime,
    },
    /// Expired: the channel refuses new handshakes until valid credentials arrive.
    Expired {
        /// When the SVID expired.
        not_after: SystemTime,
    },
}

impl CredentialStatus {
    /// The state of `svid` at `now`, warning `warning` before expiry.
    ///
    /// The SVID is expiring soon when less than the warning period is left, and also less than
    /// a quarter of its lifetime: issuers renew well before that (SPIRE at half the lifetime,
    /// cert-manager at a third), so a short-lived SVID that is being rotated as it should is
    /// never reported.
    pub(crate) fn of(svid: &Svid, now: SystemTime, warning: Duration) -> Self {
        let not_after = svid.not_after();
        let lifetime = not_after
            .duration_since(svid.not_before())
            .unwrap_or_default();
        let warning = warning.min(lifetime / 4);
        if now >= not_after {
            Self::Expired { not_after }
        } else if not_after.duration_since(now).unwrap_or_default() <= warning {
            Self::ExpiringSoon { not_after }
        } else {
            Self::Valid { not_after }
        }
    }
}
