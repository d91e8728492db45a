//! The signalling service as a whole: shared state, the hub's timer task, and shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use huddle_sfu::{SfuEvents, SfuHandle};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenIssuer;
use crate::chat::Chat;
use crate::config::{AuthConfig, ChatConfig, HttpConfig, Secret};
use crate::hub::{Hub, HubConfig};
use crate::limits::{ConnectionLimits, OriginPolicy};
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything the service needs, already validated by the caller.
#[derive(Debug)]
pub struct ServiceOptions {
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub hub: HubConfig,
    pub chat: ChatConfig,
    /// Where uploaded attachments are kept (`<data_dir>/attachments`).
    pub data_dir: PathBuf,
    /// The SFU and its events, when media runs on this server.
    pub sfu: Option<(SfuHandle, SfuEvents)>,
    /// Development mode: localhost origins only, `/v1/dev/token` enabled.
    pub dev: bool,
}

/// State shared by every handler and connection task.
pub struct AppState {
    pub(crate) hub: Mutex<Hub>,
    /// Wakes the timer task when the hub may have an earlier deadline.
    hub_timers: Notify,
    pub(crate) hub_config: HubConfig,
    pub(crate) issuer: TokenIssuer,
    pub(crate) api_secret: Option<Secret>,
    pub(crate) origins: OriginPolicy,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Registry,
    pub(crate) store: Store,
    pub(crate) chat: Arc<Chat>,
    pub(crate) sfu: Option<SfuHandle>,
    /// The SFU's latest statistics of each participant, by room and by the SFU shard
    /// that reported them (a room spread over shards has several; for the admin API).
    pub(crate) media_stats: Mutex<
        std::collections::HashMap<
            String,
            std::collections::BTreeMap<usize, Vec<huddle_sfu::ParticipantStats>>,
        >,
    >,
    pub(crate) dev: bool,
    /// Cancelled when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them to drain.
    pub(crate) tracker: TaskTracker,
    /// Set once every listener is bound; cleared at shutdown.
    ready: AtomicBool,
}

impl AppState {
    pub(crate) fn wake_timers(&self) {
        self.hub_timers.notify_one();
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }
}

/// The signalling service: build it, mount [`SignalService::router`], start its timers,
/// and call [`SignalService::shutdown`] on the way out.
#[derive(Clone)]
pub struct SignalService {
    state: Arc<AppState>,
}

impl SignalService {
    /// `registry` receives the service's metrics and is served at `/metrics` as a whole,
    /// so register other components' metrics in it first.
    pub fn new(
        opts: ServiceOptions,
        store: Store,
        mut registry: Registry,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.register(&mut registry);
        let secret = opts
            .auth
            .token_secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_default();
        let issuer = TokenIssuer::new(&secret, opts.auth.token_ttl, opts.auth.max_token_ttl);
        let origins = OriginPolicy {
            localhost_only: opts.dev,
            allowed: opts.http.allowed_origins.clone(),
            allow_same_origin: opts.http.allow_same_origin,
        };
        let limits = ConnectionLimits::new(
            opts.hub.signal.max_connections,
            opts.hub.signal.max_connections_per_ip,
            metrics.clone(),
        );
        let chat = Chat::start(
            opts.chat,
            store.pool().clone(),
            store.backend(),
            opts.data_dir,
            &mut registry,
            shutdown.clone(),
        );
        let mut hub = Hub::new(opts.hub.clone(), metrics.clone(), Instant::now());
        let (sfu, sfu_events) = match opts.sfu {
            Some((handle, events)) => {
                handle.metrics().register(&mut registry);
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                hub.set_media_exits(tx);
                tokio::spawn(crate::media::follow_exits(handle.clone(), rx));
                (Some(handle), Some(events))
            }
            None => (None, None),
        };
        let state = AppState {
            hub: Mutex::new(hub),
            hub_timers: Notify::new(),
            hub_config: opts.hub,
            issuer,
            api_secret: opts.auth.api_secret,
            origins,
            limits,
            metrics,
            registry,
            store,
            chat,
            sfu,
            media_stats: Mutex::default(),
            dev: opts.dev,
            shutdown,
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(false),
        };
        let state = Arc::new(state);
        if let Some(events) = sfu_events {
            tokio::spawn(crate::media::relay_events(state.clone(), events));
        }
        Self { state }
    }

    /// The HTTP API: `/v1/...`, `/healthz`, `/readyz`, `/metrics`.
    pub fn router(&self) -> Router {
        crate::http::router(self.state.clone())
    }

    /// Marks the service ready for `/readyz` (call once the listeners are bound).
    pub fn set_ready(&self) {
        self.state.ready.store(true, Ordering::Release);
    }

    /// Starts the task that fires the hub's timers (ring timeouts, resume grace, idle rooms).
    pub fn spawn_timers(&self) -> tokio::task::JoinHandle<()> {
        let st = self.state.clone();
        tokio::spawn(async move {
            loop {
                let next = st.hub.lock().next_timeout();
                let sleep = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = st.shutdown.cancelled() => break,
                    _ = st.hub_timers.notified() => {}
                    _ = sleep => st.hub.lock().handle_timeouts(Instant::now()),
                }
            }
        })
    }

    /// Tells every client the server is going away, then waits up to `drain` for the
    /// connections to flush and close. Cancel the shutdown token first.
    pub async fn shutdown(&self, reconnect_after: Duration, drain: Duration) -> bool {
        self.state.shutdown.cancel();
        let sessions = {
            let mut hub = self.state.hub.lock();
            let n = hub.session_count();
            hub.shutdown(reconnect_after, Instant::now());
            n
        };
        tracing::info!(sessions, "shutting down: clients told to reconnect");
        self.state.tracker.close();
        let drained = tokio::time::timeout(drain, self.state.tracker.wait())
            .await
            .is_ok();
        self.state.store.close().await;
        drained
    }

    pub fn metrics_text(&self) -> String {
        crate::http::encode_metrics(&self.state)
    }
}
