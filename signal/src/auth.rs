//! Access tokens: HS256 JWTs that say who a user is, which room they may join and what they
//! may do there (like LiveKit's access tokens), and the API secret that app backends use to
//! mint them over REST.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::protocol::{ErrorCode, Permissions};

/// Issuer written into and required of every token.
pub const ISSUER: &str = "huddle";
/// Longest identity, display name or room name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Room claim that lets a token join any room.
pub const ANY_ROOM: &str = "*";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity: stable user id chosen by the app.
    pub sub: String,
    /// Display name shown to others; defaults to the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room this token may join; `*` for any; absent for none (calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default)]
    pub grants: Permissions,
    pub iss: String,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
}

impl Claims {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }

    /// Whether this token allows joining `room`.
    pub fn may_join(&self, room: &str) -> bool {
        match self.room.as_deref() {
            Some(ANY_ROOM) => true,
            Some(r) => r == room,
            None => false,
        }
    }
}

/// What is asked for when minting a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub identity: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default = "default_grants")]
    pub grants: Permissions,
    /// Lifetime; the issuer's default when absent, never more than its maximum.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

/// Grants a token gets when none are named: everything but admin.
pub fn default_grants() -> Permissions {
    Permissions {
        publish: true,
        subscribe: true,
        chat: true,
        admin: false,
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no access token: pass ?access_token= or an Authorization: Bearer header")]
    Missing,
    #[error("access token expired")]
    Expired,
    #[error("access token not valid yet")]
    NotYetValid,
    #[error("access token signature does not verify")]
    BadSignature,
    #[error("access token malformed: {0}")]
    Malformed(String),
    #[error("invalid token request: {0}")]
    InvalidRequest(String),
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Missing => ErrorCode::TokenMissing,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::InvalidRequest(_) => ErrorCode::InvalidMessage,
            TokenError::NotYetValid | TokenError::BadSignature | TokenError::Malformed(_) => {
                ErrorCode::TokenInvalid
            }
        }
    }
}

/// Checks an identity, display name or room name: 1..=128 bytes, no control characters.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(format!("{what} must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// Checks a room name: 1..=128 of `A-Z a-z 0-9 - _ . ~` so it is safe in URLs and logs.
pub fn check_room_name(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_NAME_LEN {
        return Err(format!("room name must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err("room name may only contain A-Z a-z 0-9 - _ . ~".into());
    }
    Ok(())
}

/// Mints and verifies access tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    pub fn new(secret: &[u8], default_ttl: Duration, max_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            default_ttl,
            max_ttl,
        }
    }

    /// Mints a token for `req`; the lifetime is clamped to the issuer's maximum.
    pub fn mint(&self, req: &TokenRequest) -> Result<(String, Claims), TokenError> {
        check_name("identity", &req.identity).map_err(TokenError::InvalidRequest)?;
        if let Some(name) = &req.name {
            check_name("name", name).map_err(TokenError::InvalidRequest)?;
        }
        if let Some(room) = &req.room
            && room != ANY_ROOM
        {
            check_room_name(room).map_err(TokenError::InvalidRequest)?;
        }
        let ttl = req.ttl.unwrap_or(self.default_ttl).min(self.max_ttl);
        if ttl.is_zero() {
            return Err(TokenError::InvalidRequest("ttl must be positive".into()));
        }
        let now = unix_now();
        let claims = Claims {
            sub: req.identity.clone(),
            name: req.name.clone(),
            room: req.room.clone(),
            grants: req.grants,
            iss: ISSUER.into(),
            iat: now,
            nbf: None,
            exp: now + ttl.as_secs().max(1),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies a token's signature, algorithm, issuer and lifetime, and its names.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > 8192 {
            return Err(TokenError::Malformed("longer than 8192 bytes".into()));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed(e.to_string()),
            })?;
        let claims = data.claims;
        check_name("identity (sub)", &claims.sub).map_err(TokenError::Malformed)?;
        if let Some(name) = &claims.name {
            check_name("name", name).map_err(TokenError::Malformed)?;
        }
        Ok(claims)
    }
}

/// Compares a presented API secret with the configured one in constant time.
pub fn api_secret_matches(presented: &str, configured: &str) -> bool {
    presented.as_bytes().ct_eq(configured.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(secret: &str) -> TokenIssuer {
        TokenIssuer::new(
            secret.as_bytes(),
            Duration::from_secs(3600),
            Duration::from_secs(86400),
        )
    }

    fn req(identity: &str) -> TokenRequest {
        TokenRequest {
            identity: identity.into(),
            name: Some("Alice".into()),
            room: Some("room-1".into()),
            grants: default_grants(),
            ttl: None,
        }
    }

    #[test]
    fn round_trip() {
        let iss = issuer("0123456789abcdef0123456789abcdef");
        let (token, claims) = iss.mint(&req("alice")).unwrap();
        let back = iss.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert!(back.may_join("room-1"));
        assert!(!back.may_join("room-2"));
        assert!(back.grants.publish && !back.grants.admin);
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let (token, _) = issuer("secret-a-secret-a-secret-a-secret-a")
            .mint(&req("a"))
            .unwrap();
        assert_eq!(
            issuer("secret-b-secret-b-secret-b-secret-b").verify(&token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expired_is_rejected() {
        let iss = issuer("0123456789abcdef0123456789abcdef");
        let claims = Claims {
            sub: "a".into(),
            name: None,
            room: None,
            grants: default_grants(),
            iss: ISSUER.into(),
            iat: 1,
            nbf: None,
            exp: unix_now() - 60,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(iss.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn alg_none_and_garbage_are_rejected() {
        let iss = issuer("0123456789abcdef0123456789abcdef");
        // {"alg":"none"} header with a valid-looking body and no signature.
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiaXNzIjoiaHVkZGxlIiwiaWF0IjoxLCJleHAiOjQxMDI0NDQ4MDB9.";
        assert!(matches!(iss.verify(token), Err(TokenError::Malformed(_))));
        assert!(matches!(iss.verify("x.y.z"), Err(TokenError::Malformed(_))));
        assert!(matches!(iss.verify(""), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn ttl_is_clamped_and_names_checked() {
        let iss = issuer("0123456789abcdef0123456789abcdef");
        let mut r = req("a");
        r.ttl = Some(Duration::from_secs(10 * 86400));
        let (_, claims) = iss.mint(&r).unwrap();
        assert!(claims.exp - claims.iat <= 86400);
        r.room = Some("bad room/".into());
        assert!(matches!(iss.mint(&r), Err(TokenError::InvalidRequest(_))));
        r.room = Some(ANY_ROOM.into());
        r.identity = String::new();
        assert!(matches!(iss.mint(&r), Err(TokenError::InvalidRequest(_))));
    }

    #[test]
    fn api_secret_compare() {
        assert!(api_secret_matches("abc", "abc"));
        assert!(!api_secret_matches("abd", "abc"));
        assert!(!api_secret_matches("ab", "abc"));
    }
}
