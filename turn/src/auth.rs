//! Long-term credentials (RFC 8489 §9.2): static users from the configuration and the
//! TURN REST shared-secret scheme (coturn's `use-auth-secret`: username
//! `expiry:identity`, password base64(HMAC-SHA1(secret, username))); and stateless nonces
//! that expire.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun_rs::{Algorithm, AlgorithmId, HMACKey};
use subtle::ConstantTimeEq;

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("TURN REST credential expired")]
    Expired,
    #[error("malformed username")]
    BadUsername,
}

/// Where passwords come from.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Realm sent in challenges and used in key derivation.
    pub realm: String,
    /// Static users: username → long-term key (MD5 of `user:realm:password`).
    users: HashMap<String, HMACKey>,
    /// Shared secret of the TURN REST scheme.
    rest_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("rest_secret", &self.rest_secret.is_some())
            .finish()
    }
}

fn md5() -> Algorithm {
    Algorithm::from(AlgorithmId::MD5)
}

/// TURN REST password for `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Credentials {
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            ..Default::default()
        }
    }

    /// Adds a static user. Fails when the realm or password is not a valid OpaqueString.
    pub fn add_user(&mut self, username: &str, password: &str) -> Result<(), String> {
        let key = HMACKey::new_long_term(username, &self.realm, password, md5())
            .map_err(|e| format!("user {username:?}: {e}"))?;
        self.users.insert(username.to_owned(), key);
        Ok(())
    }

    pub fn set_rest_secret(&mut self, secret: &[u8]) {
        self.rest_secret = Some(secret.to_vec());
    }

    pub fn has_any(&self) -> bool {
        !self.users.is_empty() || self.rest_secret.is_some()
    }

    /// The long-term key for `username` at Unix time `now_unix`.
    pub fn key_for(&self, username: &str, now_unix: u64) -> Result<HMACKey, AuthError> {
        if let Some(key) = self.users.get(username) {
            return Ok(key.clone());
        }
        let Some(secret) = &self.rest_secret else {
            return Err(AuthError::UnknownUser);
        };
        // `expiry` or `expiry:identity`, as coturn accepts.
        let expiry = username.split(':').next().unwrap_or_default();
        let expiry: u64 = expiry.parse().map_err(|_| AuthError::BadUsername)?;
        if expiry < now_unix {
            return Err(AuthError::Expired);
        }
        let password = rest_password(secret, username);
        HMACKey::new_long_term(username, &self.realm, &password, md5())
            .map_err(|_| AuthError::BadUsername)
    }
}

/// Stateless nonces: `<unix seconds, hex>-<truncated HMAC of it, hex>`; a nonce is valid
/// while younger than the nonce lifetime and carries this server's MAC.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

/// A nonce check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    Valid,
    /// Well-formed and ours, but too old: answer 438 Stale Nonce.
    Stale,
    /// Not ours or malformed: also 438, so the client retries with a fresh one.
    Invalid,
}

impl Nonces {
    pub fn new(lifetime_secs: u64) -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        Self { key, lifetime_secs }
    }

    fn mac(&self, stamp: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.key).expect("any key length");
        mac.update(stamp.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn issue(&self, now_unix: u64) -> String {
        let stamp = format!("{now_unix:x}");
        let mac = self.mac(&stamp);
        format!("{stamp}-{mac}")
    }

    pub fn check(&self, nonce: &str, now_unix: u64) -> NonceState {
        let Some((stamp, mac)) = nonce.split_once('-') else {
            return NonceState::Invalid;
        };
        if stamp.len() > 16 || !bool::from(self.mac(stamp).as_bytes().ct_eq(mac.as_bytes())) {
            return NonceState::Invalid;
        }
        match u64::from_str_radix(stamp, 16) {
            Ok(t) if now_unix.saturating_sub(t) < self.lifetime_secs && t <= now_unix + 5 => {
                NonceState::Valid
            }
            Ok(_) => NonceState::Stale,
            Err(_) => NonceState::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_scheme_matches_coturn() {
        // printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
        assert_eq!(
            rest_password(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
        let mut c = Credentials::new("example.org");
        c.set_rest_secret(b"north");
        assert!(c.key_for("1700000000:alice", 1_600_000_000).is_ok());
        assert_eq!(
            c.key_for("1700000000:alice", 1_800_000_000).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(c.key_for("alice", 0).err(), Some(AuthError::BadUsername));
    }

    #[test]
    fn static_users() {
        let mut c = Credentials::new("example.org");
        c.add_user("bob", "secret").unwrap();
        let expected = HMACKey::new_long_term("bob", "example.org", "secret", md5()).unwrap();
        assert_eq!(c.key_for("bob", 0).unwrap().as_bytes(), expected.as_bytes());
        assert_eq!(c.key_for("carol", 0).err(), Some(AuthError::UnknownUser));
    }

    #[test]
    fn nonces_expire_and_resist_forgery() {
        let n = Nonces::new(600);
        let nonce = n.issue(1000);
        assert_eq!(n.check(&nonce, 1000), NonceState::Valid);
        assert_eq!(n.check(&nonce, 1599), NonceState::Valid);
        assert_eq!(n.check(&nonce, 1600), NonceState::Stale);
        let forged = format!("{:x}-{}", 1500, nonce.split_once('-').unwrap().1);
        assert_eq!(n.check(&forged, 1500), NonceState::Invalid);
        assert_eq!(
            Nonces::new(600).check(&nonce, 1000),
            NonceState::Invalid,
            "other server key"
        );
        assert_eq!(n.check("garbage", 1000), NonceState::Invalid);
    }
}
