//! Admission limits: connections in total and per IP address, and the Origin allow-list
//! that refuses cross-site WebSocket hijacking.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::Uri;
use parking_lot::Mutex;

use crate::metrics::Metrics;
use crate::protocol::ErrorCode;

/// Counts open connections and refuses those over the limits.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    metrics: Arc<Metrics>,
}

/// Held by a connection for its lifetime; gives its slot back when dropped.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
            metrics,
        })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, ErrorCode> {
        let mut open = self.open.lock();
        if open.0 >= self.max_total {
            return Err(ErrorCode::ServerFull);
        }
        let per_ip = open.1.entry(ip).or_insert(0);
        if *per_ip >= self.max_per_ip {
            return Err(ErrorCode::TooManyConnections);
        }
        *per_ip += 1;
        open.0 += 1;
        self.metrics.connections.set(open.0 as i64);
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        self.limits.metrics.connections.set(open.0 as i64);
    }
}

/// Which browser origins may open a WebSocket.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Only `http(s)://localhost|127.0.0.1|[::1]` on any port (development mode).
    pub localhost_only: bool,
    /// Exact `scheme://host[:port]` origins, lower-cased; `*` allows any.
    pub allowed: Vec<String>,
    pub allow_same_origin: bool,
}

impl OriginPolicy {
    /// Decides on an upgrade request's `Origin` given its `Host`. Requests without an Origin
    /// come from non-browser clients, which cross-site hijacking does not concern.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        if !matches!(scheme, "http" | "https") {
            return false;
        }
        if self.localhost_only {
            return matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]");
        }
        let normalised = format!("{scheme}://{}", authority.as_str().to_ascii_lowercase());
        if self
            .allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(&normalised))
        {
            return true;
        }
        self.allow_same_origin && host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits() {
        let limits = ConnectionLimits::new(3, 2, Arc::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = limits.try_acquire(a).unwrap();
        let _s2 = limits.try_acquire(a).unwrap();
        assert_eq!(
            limits.try_acquire(a).err(),
            Some(ErrorCode::TooManyConnections)
        );
        let _s3 = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).err(), Some(ErrorCode::ServerFull));
        drop(s1);
        assert!(limits.try_acquire(a).is_ok());
    }

    #[test]
    fn origins() {
        let dev = OriginPolicy {
            localhost_only: true,
            allowed: vec!["https://app.example.com".into()],
            allow_same_origin: true,
        };
        assert!(dev.allows(None, None));
        assert!(dev.allows(Some("http://localhost:8080"), Some("localhost:8080")));
        assert!(dev.allows(Some("http://127.0.0.1:3000"), None));
        assert!(dev.allows(Some("http://[::1]:8080"), None));
        assert!(!dev.allows(Some("https://app.example.com"), None));
        assert!(!dev.allows(Some("http://evil.example"), Some("evil.example")));
        assert!(!dev.allows(Some("null"), None));

        let prod = OriginPolicy {
            localhost_only: false,
            allowed: vec!["https://app.example.com".into()],
            allow_same_origin: true,
        };
        assert!(prod.allows(Some("https://APP.example.com"), Some("huddle.example.com")));
        assert!(prod.allows(
            Some("https://huddle.example.com"),
            Some("huddle.example.com")
        ));
        assert!(!prod.allows(Some("https://evil.example"), Some("huddle.example.com")));
        assert!(!prod.allows(Some("http://app.example.com"), Some("huddle.example.com")));
        assert!(!prod.allows(Some("ftp://app.example.com"), None));
    }
}
