//! `huddle serve`: binds the listeners, runs the services, shuts down gracefully on
//! SIGINT/SIGTERM (stop accepting, tell clients, drain, exit 0).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use huddle_signal::hub::HubConfig;
use huddle_signal::service::{ServiceOptions, SignalService};
use huddle_signal::store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub async fn run(cfg: Config, dev: bool) -> anyhow::Result<()> {
    // Every connection is a file descriptor; the default soft limit (often 1024) is far
    // below what one server holds.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let store = Store::open(&cfg.store).await.context("opening the store")?;
    tracing::info!(node_id = store.node_id(), url = %huddle_signal::store::redact(&cfg.store.effective_url()), "store ready");
    let shutdown = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let turn = if cfg.turn.enabled {
        let service = crate::turn::start(&cfg.turn, shutdown.clone()).await?;
        registry.register_collector(Box::new(service.collector()));
        Some(service)
    } else {
        None
    };
    let sfu = if cfg.sfu.enabled {
        let (handle, events) = huddle_sfu::Sfu::start(cfg.sfu.to_sfu_config())
            .await
            .with_context(|| format!("sfu.listen: cannot start the SFU on {}", cfg.sfu.listen))?;
        tracing::info!(addr = %handle.local_addr(), "SFU ready");
        println!("huddle: sfu listening on udp://{}", handle.local_addr());
        Some((handle, events))
    } else {
        None
    };
    let service = SignalService::new(
        ServiceOptions {
            http: cfg.http.clone(),
            auth: cfg.auth.clone(),
            hub: HubConfig {
                signal: cfg.signal.clone(),
                rooms: cfg.rooms.clone(),
                calls: cfg.calls.clone(),
                ice: cfg.ice.clone(),
            },
            chat: cfg.chat.clone(),
            data_dir: cfg.store.data_dir.clone(),
            sfu,
            dev,
        },
        store,
        registry,
        shutdown.clone(),
    );
    let app = service.router().merge(crate::web::router());
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    // Signalling and chat frames are small and latency-bound: no Nagle delay behind an
    // unacknowledged segment.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    let timers = service.spawn_timers();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );
    service.set_ready();
    tracing::info!(%addr, dev, "listening");
    // Machine-readable line on stdout: tests and scripts read the bound address from it.
    println!("huddle: listening on http://{addr}");
    if dev {
        let url = match cfg.http.public_url.clone() {
            Some(u) => u,
            None if addr.ip().is_loopback() => format!("http://localhost:{}/", addr.port()),
            None => format!("http://{addr}/"),
        };
        println!("huddle: development mode (fixed secrets, loopback only); web demo at {url}");
    }

    wait_for_signal(&shutdown).await;
    tracing::info!("shutdown requested: refusing new connections and telling clients");
    let drained = service
        .shutdown(cfg.shutdown.reconnect_after, cfg.shutdown.drain_timeout)
        .await;
    if !drained {
        tracing::warn!("some connections did not close within shutdown.drain_timeout");
    }
    match tokio::time::timeout(cfg.shutdown.drain_timeout, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "http server task failed"),
        Err(_) => tracing::warn!("http connections still open after the drain timeout"),
    }
    timers.abort();
    if let Some(turn) = turn {
        let _ = tokio::time::timeout(Duration::from_secs(5), turn.stopped()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

pub async fn wait_for_signal(shutdown: &CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = shutdown.cancelled() => {}
    }
}
