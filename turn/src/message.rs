//! Building STUN responses with stun-rs into a reusable buffer.

use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, PasswordAlgorithm,
    PasswordAlgorithms, Realm, Software, UnknownAttributes,
};
use stun_rs::{
    Algorithm, HMACKey, MessageClass, MessageEncoderBuilder, StunAttribute, StunMessage,
    StunMessageBuilder,
};

/// Largest STUN message the server writes.
pub const MAX_RESPONSE: usize = 1280;

/// RFC 8489/8656 error codes used by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    BadRequest,
    Unauthorized,
    Forbidden,
    UnknownAttribute,
    AllocationMismatch,
    StaleNonce,
    AddressFamilyNotSupported,
    WrongCredentials,
    UnsupportedTransport,
    PeerAddressFamilyMismatch,
    AllocationQuotaReached,
    ServerError,
    InsufficientCapacity,
}

impl Error {
    pub fn code(self) -> u16 {
        match self {
            Error::BadRequest => 400,
            Error::Unauthorized => 401,
            Error::Forbidden => 403,
            Error::UnknownAttribute => 420,
            Error::AllocationMismatch => 437,
            Error::StaleNonce => 438,
            Error::AddressFamilyNotSupported => 440,
            Error::WrongCredentials => 441,
            Error::UnsupportedTransport => 442,
            Error::PeerAddressFamilyMismatch => 443,
            Error::AllocationQuotaReached => 486,
            Error::ServerError => 500,
            Error::InsufficientCapacity => 508,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Error::BadRequest => "Bad Request",
            Error::Unauthorized => "Unauthorized",
            Error::Forbidden => "Forbidden",
            Error::UnknownAttribute => "Unknown Attribute",
            Error::AllocationMismatch => "Allocation Mismatch",
            Error::StaleNonce => "Stale Nonce",
            Error::AddressFamilyNotSupported => "Address Family not Supported",
            Error::WrongCredentials => "Wrong Credentials",
            Error::UnsupportedTransport => "Unsupported Transport Protocol",
            Error::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            Error::AllocationQuotaReached => "Allocation Quota Reached",
            Error::ServerError => "Server Error",
            Error::InsufficientCapacity => "Insufficient Capacity",
        }
    }

    pub fn attribute(self) -> StunAttribute {
        let code = stun_rs::ErrorCode::new(self.code(), self.reason()).expect("codes are in range");
        ErrorCode::from(code).into()
    }
}

/// How to sign a response.
pub struct Signing<'a> {
    pub key: Option<&'a HMACKey>,
    /// Sign with MESSAGE-INTEGRITY-SHA256 (the client used only that, RFC 8489 §14.6).
    pub sha256: bool,
    pub fingerprint: bool,
}

/// Encodes a response to `req` with `attrs` into `out`.
pub fn write_response(
    out: &mut Vec<u8>,
    req: &StunMessage,
    class: MessageClass,
    attrs: Vec<StunAttribute>,
    software: &Software,
    signing: Signing<'_>,
) -> bool {
    let mut b =
        StunMessageBuilder::new(req.method(), class).with_transaction_id(*req.transaction_id());
    for a in attrs {
        b = b.with_attribute(a);
    }
    b = b.with_attribute(software.clone());
    match signing.key {
        Some(key) if signing.sha256 => {
            b = b.with_attribute(MessageIntegritySha256::new(key.clone()))
        }
        Some(key) => b = b.with_attribute(MessageIntegrity::new(key.clone())),
        None => {}
    }
    if signing.fingerprint {
        b = b.with_attribute(Fingerprint::default());
    }
    let msg = b.build();
    out.clear();
    out.resize(MAX_RESPONSE, 0);
    match MessageEncoderBuilder::default().build().encode(out, &msg) {
        Ok(n) => {
            out.truncate(n);
            true
        }
        Err(e) => {
            tracing::warn!(error = ?e, "cannot encode STUN response");
            out.clear();
            false
        }
    }
}

/// PASSWORD-ALGORITHMS as the server sends it (RFC 8489 §14.11).
pub fn password_algorithms() -> PasswordAlgorithms {
    crate::auth::PASSWORD_ALGORITHMS
        .iter()
        .map(|id| PasswordAlgorithm::new(Algorithm::from(*id)))
        .collect::<Vec<_>>()
        .into()
}

/// The attributes of a 401 or 438 challenge: its nonce carries the cookie that announces
/// password algorithms, so PASSWORD-ALGORITHMS comes with it (RFC 8489 §9.2.4).
pub fn challenge(err: Error, realm: &str, nonce: &str) -> Vec<StunAttribute> {
    let mut attrs = vec![err.attribute()];
    if let Ok(r) = Realm::new(realm) {
        attrs.push(r.into());
    }
    if let Ok(n) = Nonce::new(nonce) {
        attrs.push(n.into());
    }
    attrs.push(password_algorithms().into());
    attrs
}

pub fn unknown_attributes(types: &[u16]) -> Vec<StunAttribute> {
    let mut u = UnknownAttributes::default();
    for t in types {
        u.add(*t);
    }
    vec![Error::UnknownAttribute.attribute(), u.into()]
}
