//! ICE server lists handed to clients, with short-lived TURN credentials in the TURN REST
//! style (coturn's `use-auth-secret`): username `expiry:identity`, password
//! base64(HMAC-SHA1(shared secret, username)). Any TURN server configured with the same
//! secret, huddle's or coturn, accepts them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::IceConfig;
use crate::protocol::IceServer;

/// Computes the TURN REST password for `username`.
pub fn turn_rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds TURN REST credentials for `identity` valid for `ttl` from `now`.
pub fn turn_rest_credentials(
    secret: &[u8],
    identity: &str,
    ttl: Duration,
    now: SystemTime,
) -> (String, String) {
    let expiry = now
        .checked_add(ttl)
        .unwrap_or(now)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let username = format!("{expiry}:{identity}");
    let password = turn_rest_password(secret, &username);
    (username, password)
}

/// The `iceServers` list for `identity`.
pub fn ice_servers(cfg: &IceConfig, identity: &str, now: SystemTime) -> Vec<IceServer> {
    let mut out = Vec::with_capacity(2);
    if !cfg.stun_urls.is_empty() {
        out.push(IceServer {
            urls: cfg.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if !cfg.turn_urls.is_empty()
        && let Some(secret) = &cfg.turn_secret
    {
        let (username, credential) = turn_rest_credentials(
            secret.expose().as_bytes(),
            identity,
            cfg.credential_ttl,
            now,
        );
        out.push(IceServer {
            urls: cfg.turn_urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_scheme() {
        // Reference value computed independently:
        //   printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
        assert_eq!(
            turn_rest_password(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn username_carries_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let (user, pass) = turn_rest_credentials(b"s", "bob", Duration::from_secs(60), now);
        assert_eq!(user, "1060:bob");
        assert_eq!(pass, turn_rest_password(b"s", "1060:bob"));
    }
}
