//! Wiring of the TURN server: configuration into options, and `huddle turn`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use huddle_turn::auth::Credentials;
use huddle_turn::driver::{TurnOptions, TurnService};
use huddle_turn::policy::PeerPolicy;
use huddle_turn::server::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::config::TurnConfig;

pub fn options(t: &TurnConfig) -> anyhow::Result<TurnOptions> {
    let mut credentials = Credentials::new(t.realm.clone());
    for u in &t.users {
        let (name, password) = u
            .expose()
            .split_once(':')
            .context("turn.users: expected name:password")?;
        credentials
            .add_user(name, password)
            .map_err(|e| anyhow::anyhow!("turn.users: {e}"))?;
    }
    if let Some(secret) = &t.auth_secret {
        credentials.set_rest_secret(secret.expose().as_bytes());
    }
    let parse = |nets: &[String]| -> anyhow::Result<Vec<_>> {
        nets.iter()
            .map(|n| n.parse().map_err(|e: String| anyhow::anyhow!(e)))
            .collect()
    };
    let policy = PeerPolicy {
        allow: parse(&t.allowed_peers)?,
        deny: parse(&t.denied_peers)?,
        allow_loopback: t.allow_loopback_peers,
        own: Vec::new(),
        relay_ports: (t.min_port, t.max_port),
    };
    let tls = match (&t.tls_cert, &t.tls_key) {
        (Some(cert), Some(key)) => Some(
            huddle_turn::tls::load(cert, key)
                .map_err(|e| anyhow::anyhow!("turn.tls_cert/tls_key: {e}"))?,
        ),
        _ => None,
    };
    Ok(TurnOptions {
        listen_udp: t.listen_udp.clone(),
        listen_tcp: t.listen_tcp.clone(),
        listen_tls: t.listen_tls.clone(),
        tls,
        relay_ip: t.relay_ip,
        external_ip: t.external_ip,
        relay_ip_v6: t.relay_ip_v6,
        ports: (t.min_port, t.max_port),
        server: ServerConfig {
            max_allocations: t.max_allocations,
            user_quota: t.user_quota,
            auth_failures_per_minute: t.auth_failures_per_minute,
            user_bandwidth: t.user_bandwidth,
            ..Default::default()
        },
        credentials,
        policy,
        threads: t.threads,
        max_stream_connections: t.max_stream_connections,
        max_stream_connections_per_ip: t.max_stream_connections_per_ip,
    })
}

/// Starts the TURN server and prints its bound addresses (tests read them).
pub async fn start(t: &TurnConfig, shutdown: CancellationToken) -> anyhow::Result<TurnService> {
    let service = TurnService::start(options(t)?, shutdown)
        .await
        .context("turn: cannot bind a listener (turn.listen_udp / turn.listen_tcp)")?;
    for a in &service.udp_addrs {
        println!("huddle: turn listening on udp://{a}");
    }
    for a in &service.tcp_addrs {
        println!("huddle: turn listening on tcp://{a}");
    }
    for a in &service.tls_addrs {
        println!("huddle: turn listening on tls://{a}");
    }
    tracing::info!(udp = ?service.udp_addrs, tcp = ?service.tcp_addrs, realm = %t.realm, "turn server ready");
    Ok(service)
}

/// `huddle turn`: the relay alone, with /metrics and /healthz when configured.
pub async fn run_standalone(t: TurnConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let service = start(&t, shutdown.clone()).await?;
    if let Some(addr) = t.metrics_listen {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(service.collector()));
        let registry = std::sync::Arc::new(registry);
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let registry = registry.clone();
                    async move {
                        let mut out = String::new();
                        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                        out
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("turn.metrics_listen: cannot bind {addr}"))?;
        println!("huddle: turn metrics on http://{}", listener.local_addr()?);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    crate::serve::wait_for_signal(&shutdown).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), service.stopped()).await;
    tracing::info!("turn server stopped");
    Ok(())
}

/// Flag overrides of `huddle turn` as a partial `[turn]` table.
pub fn overrides(a: &crate::cli::TurnArgs) -> serde_json::Value {
    let mut t = serde_json::Map::new();
    if !a.listen.is_empty() {
        let l: Vec<String> = a.listen.iter().map(SocketAddr::to_string).collect();
        t.insert("listen_udp".into(), l.clone().into());
        t.insert("listen_tcp".into(), l.into());
    }
    if !a.tls_listen.is_empty() {
        let l: Vec<String> = a.tls_listen.iter().map(SocketAddr::to_string).collect();
        t.insert("listen_tls".into(), l.into());
    }
    if let Some(v) = &a.tls_cert {
        t.insert("tls_cert".into(), v.display().to_string().into());
    }
    if let Some(v) = &a.tls_key {
        t.insert("tls_key".into(), v.display().to_string().into());
    }
    if let Some(v) = a.relay_ip {
        t.insert("relay_ip".into(), v.to_string().into());
    }
    if let Some(v) = a.relay_ip_v6 {
        t.insert("relay_ip_v6".into(), v.to_string().into());
    }
    if let Some(v) = a.external_ip {
        t.insert("external_ip".into(), v.to_string().into());
    }
    if let Some(v) = a.min_port {
        t.insert("min_port".into(), v.into());
    }
    if let Some(v) = a.max_port {
        t.insert("max_port".into(), v.into());
    }
    if let Some(v) = &a.realm {
        t.insert("realm".into(), v.clone().into());
    }
    if !a.user.is_empty() {
        t.insert("users".into(), a.user.clone().into());
    }
    if let Some(v) = &a.auth_secret {
        t.insert("auth_secret".into(), v.clone().into());
    }
    if a.allow_loopback_peers {
        t.insert("allow_loopback_peers".into(), true.into());
    }
    if let Some(v) = a.max_allocations {
        t.insert("max_allocations".into(), v.into());
    }
    if let Some(v) = a.user_quota {
        t.insert("user_quota".into(), v.into());
    }
    if let Some(v) = a.user_bandwidth {
        t.insert("user_bandwidth".into(), v.into());
    }
    if let Some(v) = a.threads {
        t.insert("threads".into(), v.into());
    }
    if let Some(v) = a.metrics_listen {
        t.insert("metrics_listen".into(), v.to_string().into());
    }
    serde_json::json!({ "turn": t })
}
