//! Password algorithms and the nonce cookie (RFC 8489 §9.2): challenges announce them, a
//! client may derive its key with SHA-256, and a request that names them inconsistently
//! is refused with 400.

use std::time::Instant;

use stun_rs::attributes::stun::nonce_cookie::StunSecurityFeatures;
use stun_rs::attributes::stun::{
    MessageIntegrity, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, UserName,
};
use stun_rs::methods::ALLOCATE;
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunAttribute, StunMessage, StunMessageBuilder, TransactionId,
};

use crate::server::ServerConfig;
use crate::server_tests::{REALM, code, send_raw, server, tuple, udp, verify};

fn key(algorithm: AlgorithmId) -> HMACKey {
    HMACKey::new_long_term("alice", REALM, "wonderland", Algorithm::from(algorithm)).unwrap()
}

fn algorithm(id: AlgorithmId) -> PasswordAlgorithm {
    PasswordAlgorithm::new(Algorithm::from(id))
}

fn list(ids: &[AlgorithmId]) -> StunAttribute {
    let algorithms: Vec<PasswordAlgorithm> = ids.iter().map(|id| algorithm(*id)).collect();
    PasswordAlgorithms::from(algorithms).into()
}

/// An Allocate signed with `key`, with `extra` attributes before the credentials.
fn allocate(key: &HMACKey, nonce: Option<&str>, extra: Vec<StunAttribute>) -> Vec<u8> {
    let mut b = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
        .with_transaction_id(TransactionId::default())
        .with_attribute(udp());
    for a in extra {
        b = b.with_attribute(a);
    }
    if let Some(nonce) = nonce {
        b = b
            .with_attribute(UserName::new("alice").unwrap())
            .with_attribute(Realm::new(REALM).unwrap())
            .with_attribute(Nonce::new(nonce).unwrap())
            .with_attribute(MessageIntegrity::new(key.clone()));
    }
    let mut buf = vec![0u8; 1500];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &b.build())
        .unwrap();
    buf.truncate(n);
    buf
}

fn decode(raw: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(raw)
        .unwrap()
        .0
}

/// The nonce of a fresh 401 challenge, after checking what the challenge announces.
fn challenged_nonce(s: &mut crate::server::TurnServer<crate::server_tests::FakePorts>) -> String {
    let t0 = Instant::now();
    let r = decode(&send_raw(
        s,
        t0,
        tuple(4000),
        &allocate(&key(AlgorithmId::MD5), None, vec![]),
    ));
    assert_eq!(code(&r), Some(401));
    let nonce = r.get::<Nonce>().unwrap().as_nonce().unwrap().clone();
    assert!(nonce.is_nonce_cookie(), "nonce cookie (§9.2)");
    let features = nonce.security_features().unwrap();
    assert!(features.contains(StunSecurityFeatures::PasswordAlgorithms));
    let offered = r
        .get::<PasswordAlgorithms>()
        .expect("PASSWORD-ALGORITHMS in a 401");
    let ids: Vec<AlgorithmId> = offered
        .as_password_algorithms()
        .unwrap()
        .iter()
        .map(PasswordAlgorithm::algorithm)
        .collect();
    assert_eq!(ids, [AlgorithmId::SHA256, AlgorithmId::MD5]);
    nonce.as_str().to_owned()
}

#[test]
fn sha256_derived_key_authenticates() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let nonce = challenged_nonce(&mut s);
    let sha = key(AlgorithmId::SHA256);
    let named = vec![
        algorithm(AlgorithmId::SHA256).into(),
        list(&[AlgorithmId::SHA256, AlgorithmId::MD5]),
    ];
    // The MD5 key does not verify when SHA-256 is named.
    let wrong = allocate(&key(AlgorithmId::MD5), Some(&nonce), named.clone());
    assert_eq!(
        code(&decode(&send_raw(&mut s, t0, tuple(4000), &wrong))),
        Some(401)
    );
    let raw = send_raw(
        &mut s,
        t0,
        tuple(4000),
        &allocate(&sha, Some(&nonce), named),
    );
    assert_eq!(decode(&raw).class(), MessageClass::SuccessResponse);
    verify(&raw, &sha);
    assert_eq!(s.allocation_count(), 1);
}

#[test]
fn md5_named_or_not_authenticates() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let nonce = challenged_nonce(&mut s);
    let md5 = key(AlgorithmId::MD5);
    let named = vec![
        algorithm(AlgorithmId::MD5).into(),
        list(&[AlgorithmId::SHA256, AlgorithmId::MD5]),
    ];
    let raw = send_raw(
        &mut s,
        t0,
        tuple(4000),
        &allocate(&md5, Some(&nonce), named),
    );
    assert_eq!(decode(&raw).class(), MessageClass::SuccessResponse);
    // Neither attribute: MD5, as before RFC 8489.
    let raw = send_raw(
        &mut s,
        t0,
        tuple(4001),
        &allocate(&md5, Some(&nonce), vec![]),
    );
    assert_eq!(decode(&raw).class(), MessageClass::SuccessResponse);
}

#[test]
fn inconsistent_password_algorithms_get_400() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let nonce = challenged_nonce(&mut s);
    let sha = key(AlgorithmId::SHA256);
    let both = [AlgorithmId::SHA256, AlgorithmId::MD5];
    for (what, extra) in [
        (
            "algorithm without the list",
            vec![algorithm(AlgorithmId::SHA256).into()],
        ),
        ("list without an algorithm", vec![list(&both)]),
        (
            "list not the one the server sent (bid-down)",
            vec![
                algorithm(AlgorithmId::MD5).into(),
                list(&[AlgorithmId::MD5]),
            ],
        ),
        (
            "algorithm not in the list",
            vec![
                algorithm(AlgorithmId::MD5).into(),
                list(&[AlgorithmId::SHA256]),
            ],
        ),
    ] {
        let raw = send_raw(
            &mut s,
            t0,
            tuple(4000),
            &allocate(&sha, Some(&nonce), extra),
        );
        assert_eq!(code(&decode(&raw)), Some(400), "{what}");
    }
    assert_eq!(s.allocation_count(), 0);
}

#[test]
fn nonce_without_its_cookie_is_refreshed() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let nonce = challenged_nonce(&mut s);
    let stripped = nonce.strip_prefix(crate::auth::NONCE_COOKIE).unwrap();
    let msg = allocate(&key(AlgorithmId::MD5), Some(stripped), vec![]);
    let r = decode(&send_raw(&mut s, t0, tuple(4000), &msg));
    assert_eq!(
        code(&r),
        Some(438),
        "stale nonce: a fresh one with the cookie"
    );
    let fresh = r.get::<Nonce>().unwrap().as_nonce().unwrap().clone();
    assert!(fresh.is_nonce_cookie());
}
