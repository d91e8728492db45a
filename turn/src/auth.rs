//! Long-term credentials (RFC 8489 §9.2): static users from the configuration and the
//! TURN REST shared-secret scheme (coturn's `use-auth-secret`: username
//! `expiry:identity`, password base64(HMAC-SHA1(secret, username))), with the key derived
//! by MD5 or SHA-256 (PASSWORD-ALGORITHM, §9.2.2); and stateless nonces that expire and
//! carry the nonce cookie announcing password algorithms (§9.2).

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
    #[error("password algorithm not offered")]
    UnsupportedAlgorithm,
}

/// Where passwords come from.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Realm sent in challenges and used in key derivation.
    pub realm: String,
    /// Static users: username → long-term keys (`user:realm:password` hashed by MD5 and
    /// by SHA-256, §9.2.2), so that no password is kept.
    users: HashMap<String, [HMACKey; 2]>,
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

/// The password algorithms the server offers, in its order of preference (§18.5).
pub const PASSWORD_ALGORITHMS: [AlgorithmId; 2] = [AlgorithmId::SHA256, AlgorithmId::MD5];

/// Start of every nonce: the nonce cookie with the password-algorithms bit set (§9.2,
/// §18.1: "obMatJos2" then the 24-bit security feature set in base64, bit 0 first).
pub const NONCE_COOKIE: &str = "obMatJos2gAAA";

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
        let key = |id| {
            HMACKey::new_long_term(username, &self.realm, password, Algorithm::from(id))
                .map_err(|e| format!("user {username:?}: {e}"))
        };
        let keys = [key(AlgorithmId::MD5)?, key(AlgorithmId::SHA256)?];
        self.users.insert(username.to_owned(), keys);
        Ok(())
    }

    pub fn set_rest_secret(&mut self, secret: &[u8]) {
        self.rest_secret = Some(secret.to_vec());
    }

    pub fn has_any(&self) -> bool {
        !self.users.is_empty() || self.rest_secret.is_some()
    }

    /// The long-term (MD5) key for `username` at Unix time `now_unix`.
    pub fn key_for(&self, username: &str, now_unix: u64) -> Result<HMACKey, AuthError> {
        self.key_with(username, now_unix, AlgorithmId::MD5)
    }

    /// The long-term key for `username` derived with `algorithm` (one of
    /// [`PASSWORD_ALGORITHMS`]).
    pub fn key_with(
        &self,
        username: &str,
        now_unix: u64,
        algorithm: AlgorithmId,
    ) -> Result<HMACKey, AuthError> {
        let slot = match algorithm {
            AlgorithmId::MD5 => 0,
            AlgorithmId::SHA256 => 1,
            _ => return Err(AuthError::UnsupportedAlgorithm),
        };
        if let Some(keys) = self.users.get(username) {
            return Ok(keys[slot].clone());
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
        HMACKey::new_long_term(username, &self.realm, &password, Algorithm::from(algorithm))
            .map_err(|_| AuthError::BadUsername)
    }
}

/// Stateless nonces: [`NONCE_COOKIE`] then `<unix seconds, hex>-<truncated HMAC of it,
/// hex>`; a nonce is valid while younger than the nonce lifetime and carries this
/// server's MAC. One without the cookie is not ours: a client whose nonce lost its cookie
/// on the way is sent a fresh one rather than let fall back to MD5 (§9.2, bid-down).
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
        format!("{NONCE_COOKIE}{stamp}-{mac}")
    }

    pub fn check(&self, nonce: &str, now_unix: u64) -> NonceState {
        let Some((stamp, mac)) = nonce
            .strip_prefix(NONCE_COOKIE)
            .and_then(|n| n.split_once('-'))
        else {
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

    fn md5() -> Algorithm {
        Algorithm::from(AlgorithmId::MD5)
    }

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
        let sha = HMACKey::new_long_term(
            "bob",
            "example.org",
            "secret",
            Algorithm::from(AlgorithmId::SHA256),
        )
        .unwrap();
        let got = c.key_with("bob", 0, AlgorithmId::SHA256).unwrap();
        assert_eq!(got.as_bytes(), sha.as_bytes());
        assert_eq!(got.as_bytes().len(), 32);
    }

    #[test]
    fn nonce_cookie_announces_password_algorithms() {
        use stun_rs::attributes::stun::Nonce;
        use stun_rs::attributes::stun::nonce_cookie::StunSecurityFeatures;
        let nonce = Nonce::new(Nonces::new(600).issue(1000)).unwrap();
        assert!(nonce.is_nonce_cookie());
        let features = nonce.security_features().unwrap();
        assert!(features.contains(StunSecurityFeatures::PasswordAlgorithms));
        assert!(!features.contains(StunSecurityFeatures::UserNameAnonymity));
    }

    #[test]
    fn nonces_expire_and_resist_forgery() {
        let n = Nonces::new(600);
        let nonce = n.issue(1000);
        assert_eq!(n.check(&nonce, 1000), NonceState::Valid);
        assert_eq!(n.check(&nonce, 1599), NonceState::Valid);
        assert_eq!(n.check(&nonce, 1600), NonceState::Stale);
        let forged = format!(
            "{NONCE_COOKIE}{:x}-{}",
            1500,
            nonce.split_once('-').unwrap().1
        );
        assert_eq!(n.check(&forged, 1500), NonceState::Invalid);
        let uncookied = nonce.strip_prefix(NONCE_COOKIE).unwrap();
        assert_eq!(
            n.check(uncookied, 1000),
            NonceState::Invalid,
            "cookie removed"
        );
        assert_eq!(
            Nonces::new(600).check(&nonce, 1000),
            NonceState::Invalid,
            "other server key"
        );
        assert_eq!(n.check("garbage", 1000), NonceState::Invalid);
    }
}
