//! Revocation over loopback: CRLs and deny-lists, from code and from files that reload, on
//! both sides, through the verified-chain cache and resumed sessions. Certificates and CRLs are
//! minted per test with the testkit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::AlertDescription;
use secure_channel::identity::{ChainError, PeerRejection};
use secure_channel::revocation::{DenyEntry, DenyList, RevocationError, RevocationLists};
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::{
    ConnectionError, Credentials, Location, MemorySource, SecureChannel, SecureChannelBuilder,
    SpiffeId, TrustBundles,
};
use support::*;
use tokio::sync::watch;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";
const POLL: Duration = Duration::from_millis(20);

/// A channel presenting `svid`, trusting `trust`'s bundle, configured by `configure`; the
/// source is returned to be kept alive with it.
fn channel(
    svid: &IssuedSvid,
    trust: &DevCa,
    configure: impl FnOnce(SecureChannelBuilder) -> SecureChannelBuilder,
) -> (SecureChannel, MemorySource) {
    let source = MemorySource::new(Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(trust.bundle().unwrap()),
    ));
    let channel = configure(SecureChannel::builder(&source)).build().unwrap();
    (channel, source)
}

/// A server `SERVER_ID` of `ca` allowing `CLIENT_ID`, configured further by `configure`.
async fn server(
    ca: &DevCa,
    configure: impl FnOnce(SecureChannelBuilder) -> SecureChannelBuilder,
) -> (TestServer, MemorySource) {
    let svid = ca.svid(SERVER_ID).issue().unwrap();
    let (channel, source) = channel(&svid, ca, |b| configure(b.allow_client(CLIENT_ID)));
    (TestServer::start(channel).await, source)
}

/// A server `SERVER_ID` of `ca` allowing `CLIENT_ID` that checks nothing more, with its SVID.
async fn plain_server(ca: &DevCa) -> (TestServer, IssuedSvid, MemorySource) {
    let svid = ca.svid(SERVER_ID).issue().unwrap();
    let (channel, source) = channel(&svid, ca, |b| b.allow_client(CLIENT_ID));
    (TestServer::start(channel).await, svid, source)
}

/// A client presenting `svid`, expecting `SERVER_ID`.
fn client(svid: &IssuedSvid, trust: &DevCa) -> (SecureChannel, MemorySource) {
    channel(svid, trust, |b| b.expect_server(SERVER_ID))
}

/// Connects and reads the greeting: the ID the server saw, or the client's error.
async fn call(client: &SecureChannel, server: &TestServer) -> Result<String, ConnectionError> {
    let mut stream = within(client.connect_tcp(server.addr)).await?;
    read_line(&mut stream)
        .await
        .map_err(ConnectionError::Handshake)
}

/// Asserts the server served `client` (both sides agree).
async fn served(client: &SecureChannel, server: &mut TestServer) {
    assert_eq!(call(client, server).await.unwrap(), CLIENT_ID);
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
}

/// Asserts the server refused a new client presenting `svid` (a full handshake: a new
/// channel has no session to resume) with `alert`, and returns the server's rejection.
async fn refused(
    svid: &IssuedSvid,
    trust: &DevCa,
    server: &mut TestServer,
    alert: AlertDescription,
) -> PeerRejection {
    let (client, _source) = client(svid, trust);
    match call(&client, server).await {
        Err(ConnectionError::RefusedByServer { alert: got, .. }) => assert_eq!(got, alert),
        other => panic!("expected RefusedByServer({alert:?}), got {other:?}"),
    }
    match server.next().await {
        Err(ConnectionError::PeerRejected(rejection)) => rejection,
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

fn expect_revoked(rejection: &PeerRejection) {
    assert!(
        matches!(
            rejection,
            PeerRejection::InvalidChain {
                reason: ChainError::Revoked,
                ..
            }
        ),
        "expected InvalidChain(Revoked), got {rejection:?}"
    );
}

fn expect_denied(rejection: &PeerRejection, entry: &DenyEntry) {
    match rejection {
        PeerRejection::Denied {
            presented,
            entry: found,
        } => {
            assert_eq!(presented.to_string(), CLIENT_ID);
            assert_eq!(found, entry);
        }
        other => panic!("expected Denied({entry}), got {other:?}"),
    }
}

/// Waits (bounded) for the next change seen by `receiver`.
async fn next_change(receiver: &mut watch::Receiver<u64>) -> u64 {
    within(receiver.changed()).await.unwrap();
    *receiver.borrow_and_update()
}

/// Replaces `path` atomically (write beside, rename over).
fn replace(path: &Path, content: &[u8]) {
    let beside = path.with_extension("new");
    std::fs::write(&beside, content).unwrap();
    std::fs::rename(&beside, path).unwrap();
}

/// The trust domain's CA and a client SVID it issued.
fn example_and_client() -> (DevCa, IssuedSvid) {
    let ca = ca("example.org");
    let svid = ca.svid(CLIENT_ID).issue().unwrap();
    (ca, svid)
}

/// The times of a `RevocationListExpired` refusal (any other refusal fails the test).
fn stale_list_times(rejection: PeerRejection) -> (SystemTime, SystemTime) {
    match rejection {
        PeerRejection::InvalidChain {
            reason: ChainError::RevocationListExpired { now, next_update },
            ..
        } => (now, next_update),
        other => panic!("expected RevocationListExpired, got {other:?}"),
    }
}

fn digest_of(svid: &IssuedSvid) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(svid.leaf().as_ref()).into()
}

#[tokio::test]
async fn a_client_whose_leaf_is_on_a_crl_is_refused_with_certificate_revoked() {
    let ca = ca("example.org");
    let revoked = ca.svid(CLIENT_ID).issue().unwrap();
    let fresh = ca.svid(CLIENT_ID).issue().unwrap();
    let lists = RevocationLists::new([ca.crl(&[revoked.serial()]).der().unwrap()]).unwrap();
    let (mut server, _s) = server(&ca, |b| b.revocation_lists(&lists)).await;

    let rejection = refused(
        &revoked,
        &ca,
        &mut server,
        AlertDescription::CertificateRevoked,
    )
    .await;
    expect_revoked(&rejection);
    assert_eq!(
        rejection.to_string(),
        format!(
            "{CLIENT_ID}: chain does not validate against the bundle of example.org: certificate revoked: its serial number is on its issuer's revocation list"
        )
    );
    // The same ID with a certificate that is not on the list is served.
    let (good, _g) = client(&fresh, &ca);
    served(&good, &mut server).await;
}

#[tokio::test]
async fn a_client_refuses_a_server_whose_leaf_is_revoked() {
    let ca = ca("example.org");
    let (server, server_svid, _s) = plain_server(&ca).await;
    let lists = RevocationLists::new([ca.crl(&[server_svid.serial()]).pem().unwrap()]).unwrap();
    let client_svid = ca.svid(CLIENT_ID).issue().unwrap();
    let (checking, _c) = channel(&client_svid, &ca, |b| {
        b.expect_server(SERVER_ID).revocation_lists(&lists)
    });
    match call(&checking, &server).await {
        Err(ConnectionError::PeerRejected(rejection)) => expect_revoked(&rejection),
        other => panic!("expected the server to be refused as revoked, got {other:?}"),
    }
    // A client without the lists connects to the same server.
    let (plain, _p) = client(&client_svid, &ca);
    assert_eq!(call(&plain, &server).await.unwrap(), CLIENT_ID);
}

#[tokio::test]
async fn a_revoked_intermediate_refuses_every_leaf_it_issued() {
    let root = ca("example.org");
    let intermediate = root.intermediate().unwrap();
    // The root's CRL names the intermediate, not the leaf.
    let lists = RevocationLists::new([root.crl(&[intermediate.serial()]).der().unwrap()]).unwrap();
    let (mut server, _s) = server(&root, |b| b.revocation_lists(&lists)).await;

    let under = intermediate.svid(CLIENT_ID).issue().unwrap();
    let rejection = refused(
        &under,
        &root,
        &mut server,
        AlertDescription::CertificateRevoked,
    )
    .await;
    expect_revoked(&rejection);
    // A leaf of the root itself is not affected.
    let direct = root.svid(CLIENT_ID).issue().unwrap();
    let (good, _g) = client(&direct, &root);
    served(&good, &mut server).await;
}

#[tokio::test]
async fn a_crl_of_another_ca_changes_nothing() {
    let (ca, svid) = example_and_client();
    // Another CA of the same trust domain, and one of another, list the client's serial.
    let other = DevCa::new("example.org").unwrap();
    let foreign = DevCa::new("other.org").unwrap();
    let lists = RevocationLists::new([
        other.crl(&[svid.serial()]).der().unwrap(),
        foreign.crl(&[svid.serial()]).der().unwrap(),
    ])
    .unwrap();
    let (mut server, _s) = server(&ca, |b| b.revocation_lists(&lists)).await;
    let (good, _g) = client(&svid, &ca);
    served(&good, &mut server).await;
}

#[tokio::test]
async fn an_expired_crl_fails_closed_unless_next_update_is_ignored() {
    let (ca, svid) = example_and_client();
    let now = SystemTime::now();
    // A list naming nothing, past its nextUpdate.
    let stale = ca
        .crl(&[])
        .this_update(now - Duration::from_secs(7200))
        .next_update(now - Duration::from_secs(60))
        .der()
        .unwrap();
    let lists = RevocationLists::new([&stale]).unwrap();
    let (mut strict, _s) = server(&ca, |b| b.revocation_lists(&lists)).await;
    let (client_channel, _c) = client(&svid, &ca);
    let rejection = refused(&svid, &ca, &mut strict, AlertDescription::BadCertificate).await;
    let (now, next_update) = stale_list_times(rejection);
    assert!(next_update < now);

    let lenient = RevocationLists::new([&stale]).unwrap().ignore_next_update();
    let (mut lenient_server, _l) = server(&ca, |b| b.revocation_lists(&lenient)).await;
    served(&client_channel, &mut lenient_server).await;
}

#[tokio::test]
async fn deny_by_id_and_by_digest_from_code_until_removed() {
    let (ca, svid) = example_and_client();
    let other = ca.svid(CLIENT_ID).issue().unwrap();
    let denied = DenyList::new();
    let (mut server, _s) = server(&ca, |b| b.deny_list(&denied)).await;
    let (c, _c) = client(&svid, &ca);
    let (c2, _c2) = client(&other, &ca);
    served(&c, &mut server).await;

    // By ID: every certificate of it, whatever the allow-list says.
    let by_id = DenyEntry::SpiffeId(SpiffeId::new(CLIENT_ID).unwrap());
    assert!(denied.deny(by_id.clone()));
    let rejection = refused(&svid, &ca, &mut server, AlertDescription::AccessDenied).await;
    expect_denied(&rejection, &by_id);
    expect_denied(
        &refused(&other, &ca, &mut server, AlertDescription::AccessDenied).await,
        &by_id,
    );
    assert!(denied.remove(&by_id));
    served(&c, &mut server).await;

    // By digest: that one certificate only.
    let by_digest = DenyEntry::CertificateSha256(digest_of(&svid));
    assert!(denied.deny_certificate_sha256(digest_of(&svid)));
    expect_denied(
        &refused(&svid, &ca, &mut server, AlertDescription::AccessDenied).await,
        &by_digest,
    );
    served(&c2, &mut server).await;
    assert!(denied.remove(&by_digest));
    served(&c, &mut server).await;
}

#[tokio::test]
async fn a_client_refuses_a_denied_server_and_several_lists_combine() {
    let ca = ca("example.org");
    let (server, server_svid, _s) = plain_server(&ca).await;
    let (empty, denied) = (DenyList::new(), DenyList::new());
    let client_svid = ca.svid(CLIENT_ID).issue().unwrap();
    let (checking, _c) = channel(&client_svid, &ca, |b| {
        b.expect_server(SERVER_ID)
            .deny_list(&empty)
            .deny_list(&denied)
    });
    assert_eq!(call(&checking, &server).await.unwrap(), CLIENT_ID);
    denied.deny_certificate_sha256(digest_of(&server_svid));
    // The client holds a session with the server: the resumed session is refused.
    match call(&checking, &server).await {
        Err(ConnectionError::PeerRejected(PeerRejection::ResumedSessionInvalid(inner))) => {
            match *inner {
                PeerRejection::Denied { presented, entry } => {
                    assert_eq!(presented.to_string(), SERVER_ID);
                    assert_eq!(entry, DenyEntry::CertificateSha256(digest_of(&server_svid)));
                }
                other => panic!("expected Denied, got {other:?}"),
            }
        }
        other => panic!("expected the server to be denied, got {other:?}"),
    }
    // A new client (a full handshake) refuses it too.
    let (fresh, _f) = channel(&client_svid, &ca, |b| {
        b.expect_server(SERVER_ID).deny_list(&denied)
    });
    assert!(matches!(
        call(&fresh, &server).await,
        Err(ConnectionError::PeerRejected(PeerRejection::Denied { .. }))
    ));
    // Per-call expectations (connect_expecting) check the deny-lists too.
    let tcp = within(tokio::net::TcpStream::connect(server.addr))
        .await
        .unwrap();
    let expected = secure_channel::AllowList::from_iter([SERVER_ID.parse().unwrap()]);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    match within(fresh.connect_expecting(expected, name, tcp)).await {
        Err(ConnectionError::PeerRejected(
            PeerRejection::Denied { .. } | PeerRejection::ResumedSessionInvalid(_),
        )) => {}
        other => panic!("expected the server to be denied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resumed_session_is_checked_against_the_deny_list() {
    let (ca, svid) = example_and_client();
    let denied = DenyList::new();
    let (mut server, _s) = server(&ca, |b| b.deny_list(&denied)).await;
    let (c, _c) = client(&svid, &ca);
    // Once full, then resumed: the session is there to be resumed.
    let kind =
        |stream: &secure_channel::SecureStream<tokio::net::TcpStream>| stream.handshake_kind();
    let mut first = within(c.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut first).await.unwrap(), CLIENT_ID);
    assert_eq!(kind(&first), Some(rustls::HandshakeKind::Full));
    server.next().await.unwrap();
    let mut second = within(c.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut second).await.unwrap(), CLIENT_ID);
    assert_eq!(kind(&second), Some(rustls::HandshakeKind::Resumed));
    server.next().await.unwrap();

    denied.deny_id(SpiffeId::new(CLIENT_ID).unwrap());
    assert!(
        call(&c, &server).await.is_err(),
        "a denied client was served"
    );
    match server.next().await {
        Err(ConnectionError::PeerRejected(PeerRejection::ResumedSessionInvalid(inner))) => {
            expect_denied(
                &inner,
                &DenyEntry::SpiffeId(SpiffeId::new(CLIENT_ID).unwrap()),
            );
        }
        other => panic!("expected the resumed session to be refused as denied, got {other:?}"),
    }
}

#[tokio::test]
async fn the_verified_chain_cache_does_not_hide_a_newly_revoked_certificate() {
    let (ca, svid) = example_and_client();
    let lists = RevocationLists::new([ca.crl(&[]).der().unwrap()]).unwrap();
    let (server_channel, _s) = channel(&ca.svid(SERVER_ID).issue().unwrap(), &ca, |b| {
        b.allow_client(CLIENT_ID).revocation_lists(&lists)
    });
    let mut server = TestServer::start(server_channel.clone()).await;
    let (c, _c) = client(&svid, &ca);
    served(&c, &mut server).await;
    // The chain is cached now (the client's and the server's own verifier each hold one).
    assert!(server_channel.verified_chain_cache_usage().0 >= 1);

    lists
        .replace([ca.crl(&[svid.serial()]).der().unwrap()])
        .unwrap();
    expect_revoked(
        &refused(
            &svid,
            &ca,
            &mut server,
            AlertDescription::CertificateRevoked,
        )
        .await,
    );
}

#[tokio::test]
async fn a_crl_file_replaced_on_disk_changes_the_next_handshake_and_garbage_is_refused() {
    let (ca, svid) = example_and_client();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crl.pem");
    std::fs::write(&path, ca.crl(&[]).pem().unwrap()).unwrap();
    let lists = RevocationLists::from_files([&path])
        .poll_interval(POLL)
        .start()
        .unwrap();
    let (mut server, _s) = server(&ca, |b| b.revocation_lists(&lists)).await;
    let (c, _c) = client(&svid, &ca);
    served(&c, &mut server).await;

    let mut revisions = lists.subscribe();
    replace(&path, &ca.crl(&[svid.serial()]).der().unwrap());
    assert_eq!(next_change(&mut revisions).await, 2);
    expect_revoked(
        &refused(
            &svid,
            &ca,
            &mut server,
            AlertDescription::CertificateRevoked,
        )
        .await,
    );

    // Garbage: refused, counted, and the last good list (revoking the client) stays.
    let mut failures = lists.subscribe_failed_reloads();
    replace(
        &path,
        b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n",
    );
    assert_eq!(next_change(&mut failures).await, 1);
    assert_eq!(lists.failed_reloads(), 1);
    assert_eq!(lists.revision(), 2);
    expect_revoked(
        &refused(
            &svid,
            &ca,
            &mut server,
            AlertDescription::CertificateRevoked,
        )
        .await,
    );

    // An empty file too: it must not lift the revocation.
    replace(&path, b"");
    assert_eq!(next_change(&mut failures).await, 2);
    expect_revoked(
        &refused(
            &svid,
            &ca,
            &mut server,
            AlertDescription::CertificateRevoked,
        )
        .await,
    );

    // A good list again, without the serial: served.
    replace(&path, ca.crl(&[]).number(3).pem().unwrap().as_bytes());
    assert_eq!(next_change(&mut revisions).await, 3);
    served(&c, &mut server).await;
}

#[tokio::test]
async fn a_deny_list_file_replaced_on_disk_changes_the_next_handshake_and_garbage_is_refused() {
    let (ca, svid) = example_and_client();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deny.txt");
    std::fs::write(&path, "# nobody yet\n").unwrap();
    let from_file = DenyList::from_file(&path)
        .poll_interval(POLL)
        .start()
        .unwrap();
    let from_code = DenyList::new();
    let (mut server, _s) = server(&ca, |b| b.deny_list(&from_code).deny_list(&from_file)).await;
    let (c, _c) = client(&svid, &ca);
    served(&c, &mut server).await;

    let mut revisions = from_file.subscribe();
    let digest = DenyEntry::CertificateSha256(digest_of(&svid));
    let text = format!(
        "# incident 7\n{}\n",
        digest
            .to_string()
            .to_uppercase()
            .replace("SHA256", "sha256")
    );
    replace(&path, text.as_bytes());
    assert_eq!(next_change(&mut revisions).await, 2);
    expect_denied(
        &refused(&svid, &ca, &mut server, AlertDescription::AccessDenied).await,
        &digest,
    );

    // A bad line: the whole file refused, the last good list stays.
    let mut failures = from_file.subscribe_failed_reloads();
    replace(&path, format!("{CLIENT_ID}\nnot an entry\n").as_bytes());
    assert_eq!(next_change(&mut failures).await, 1);
    assert_eq!(from_file.revision(), 2);
    expect_denied(
        &refused(&svid, &ca, &mut server, AlertDescription::AccessDenied).await,
        &digest,
    );

    // The entry removed from the file: served again.
    replace(&path, b"\n");
    assert_eq!(next_change(&mut revisions).await, 3);
    served(&c, &mut server).await;
}

#[test]
fn bad_files_at_start_are_typed_errors_naming_the_file_and_line() {
    let ca = ca("example.org");
    let dir = tempfile::tempdir().unwrap();

    let deny = dir.path().join("deny.txt");
    std::fs::write(
        &deny,
        format!("# ok\n{CLIENT_ID}\n\nspiffe://example.org/x/../y\n"),
    )
    .unwrap();
    let error = DenyList::from_file(&deny).start().unwrap_err();
    match &error {
        RevocationError::InvalidDenyEntry { location, line, .. } => {
            assert_eq!(*location, Location::File(deny.clone()));
            assert_eq!(*line, 4);
        }
        other => panic!("expected InvalidDenyEntry, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with(&format!("file {}, line 4: ", deny.display())),
        "{error}"
    );

    let crl = dir.path().join("crl.der");
    std::fs::write(&crl, b"\x30\x03\x02\x01\x00").unwrap();
    let good = dir.path().join("good.pem");
    std::fs::write(&good, ca.crl(&[]).pem().unwrap()).unwrap();
    let error = RevocationLists::from_files([&good, &crl])
        .start()
        .unwrap_err();
    match &error {
        RevocationError::InvalidCrl {
            location, index, ..
        } => assert_eq!((location, *index), (&Location::File(crl.clone()), 0)),
        other => panic!("expected InvalidCrl, got {other:?}"),
    }
    assert!(
        error.to_string().contains(&crl.display().to_string()),
        "{error}"
    );

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        RevocationLists::from_files([&empty]).start(),
        Err(RevocationError::NoCrl { location }) if location == Location::File(empty.clone())
    ));
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        RevocationLists::from_files([&missing]).start(),
        Err(RevocationError::Read(read)) if read.path == missing
    ));
    assert!(matches!(
        DenyList::from_file(&missing).start(),
        Err(RevocationError::Read(_))
    ));
}

#[tokio::test]
async fn a_list_naming_the_issuer_but_signed_by_another_key_fails_closed() {
    // Two intermediates under different roots carry the same subject name (the testkit names
    // intermediates by trust domain and depth): the other one's list is taken as the issuer's
    // by name, and its signature does not verify with the issuer's key.
    let root = ca("example.org");
    let issuer = root.intermediate().unwrap();
    let impostor = DevCa::new("example.org").unwrap().intermediate().unwrap();
    let lists = RevocationLists::new([impostor.crl(&[]).der().unwrap()]).unwrap();
    let (mut server, _s) = server(&root, |b| b.revocation_lists(&lists)).await;
    let svid = issuer.svid(CLIENT_ID).issue().unwrap();
    match refused(&svid, &root, &mut server, AlertDescription::BadCertificate).await {
        PeerRejection::InvalidChain {
            reason: ChainError::RevocationList(reason),
            ..
        } => assert!(reason.contains("signature"), "{reason}"),
        other => panic!("expected RevocationList, got {other:?}"),
    }
    // The issuer's own list is used.
    lists.replace([issuer.crl(&[]).der().unwrap()]).unwrap();
    let (c, _c) = client(&svid, &root);
    served(&c, &mut server).await;
}

#[tokio::test]
async fn a_cached_chain_is_not_served_past_the_lists_next_update() {
    let (ca, svid) = example_and_client();
    let now = SystemTime::now();
    let lists = RevocationLists::new([ca
        .crl(&[])
        .next_update(now + Duration::from_secs(300))
        .der()
        .unwrap()])
    .unwrap();
    let clock = std::sync::Arc::new(TestClock::at(now));
    let time = clock.clone();
    let (mut server, _s) =
        server(&ca, move |b| b.revocation_lists(&lists).time_provider(time)).await;
    served(&client(&svid, &ca).0, &mut server).await;
    // Past the list's nextUpdate (the certificates still valid): the chain cached a moment ago
    // is validated again, and refused.
    clock.set(now + Duration::from_secs(600));
    stale_list_times(refused(&svid, &ca, &mut server, AlertDescription::BadCertificate).await);
}
