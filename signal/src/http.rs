//! HTTP routes: the WebSocket upgrade, token minting, the admin API, health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{ANY_ROOM, TokenRequest, api_secret_matches, default_grants};
use crate::protocol::ErrorCode;
use crate::service::AppState;

/// An HTTP error with the same `{"type":"error","code","message"}` body as socket errors.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"type": "error", "code": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

/// Initial read buffer of a WebSocket. tungstenite zero-fills the whole buffer before each
/// read, so every byte of it is resident for every idle connection; signalling messages are
/// small, and larger frames grow the buffer on demand.
const READ_BUFFER_BYTES: usize = 512;

pub(crate) fn router(st: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/v1/ws", get(ws_upgrade))
        .route("/v1/tokens", post(mint_token))
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/rooms/{room}", delete(close_room))
        .route("/v1/rooms/{room}/participants", get(list_participants))
        .route("/v1/rooms/{room}/media", get(room_media))
        .route(
            "/v1/rooms/{room}/participants/{identity}",
            delete(remove_participant),
        )
        .route(
            "/v1/rooms/{room}/participants/{identity}/mute",
            post(mute_participant),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if st.dev {
        api = api.route("/v1/dev/token", post(dev_token));
    }
    // Uploads stream to disk under their own limit (chat.max_attachment_bytes).
    let uploads = Router::new()
        .route(
            "/v1/chat/attachments",
            post(crate::chat::attachments::upload),
        )
        .layer(DefaultBodyLimit::disable());
    api.route(
        "/v1/chat/attachments/{id}",
        get(crate::chat::attachments::download),
    )
    .layer(DefaultBodyLimit::max(64 * 1024))
    .merge(uploads)
    .with_state(st)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    access_token: Option<String>,
    resume_token: Option<String>,
}

async fn ws_upgrade(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let refuse = |status, code: ErrorCode, message: String| {
        st.metrics
            .connections_rejected
            .get_or_create(&crate::metrics::CodeLabel {
                code: code.as_str(),
            })
            .inc();
        tracing::debug!(%peer, code = code.as_str(), %message, "upgrade refused");
        ApiError::new(status, code, message)
    };
    if st.shutdown.is_cancelled() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "server is shutting down".into(),
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !st.origins.allows(origin, host) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            format!(
                "origin {:?} may not open a WebSocket here",
                origin.unwrap_or_default()
            ),
        ));
    }
    let token = q.access_token.as_deref().or_else(|| bearer(&headers));
    let claims = match token {
        None => Err(crate::auth::TokenError::Missing),
        Some(t) => st.issuer.verify(t),
    }
    .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))?;
    let slot = st.limits.try_acquire(peer.ip()).map_err(|code| {
        let status = match code {
            ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        refuse(status, code, "connection limit reached".into())
    })?;
    let max = st.hub_config.signal.max_message_bytes;
    // Frames up to 4x the protocol limit are read so that the client gets a
    // `message_too_large` error and keeps its connection; larger ones close it (1009).
    let hard_limit = max.saturating_mul(4).max(64 * 1024);
    let tracker = st.tracker.clone();
    let resume = q.resume_token;
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(hard_limit.saturating_mul(4))
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            tracker.track_future(crate::connection::run(
                socket, st, claims, resume, slot, peer,
            ))
        }))
}

fn require_api_secret(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let configured = st.api_secret.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unauthorized,
            "auth.api_secret is not configured",
        )
    })?;
    match bearer(headers) {
        Some(p) if api_secret_matches(p, configured.expose()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "wrong API secret",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send the API secret as Authorization: Bearer <secret>",
        )),
    }
}

/// Admin endpoints accept the API secret or an access token with the admin grant.
fn require_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if require_api_secret(st, headers).is_ok() {
        return Ok(());
    }
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send the API secret or an admin token as a Bearer header",
        )
    })?;
    match st.issuer.verify(token) {
        Ok(c) if c.grants.admin => Ok(()),
        Ok(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the token lacks the admin grant",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "wrong API secret or invalid token",
        )),
    }
}

/// A request body that is not the expected JSON.
fn bad_body(e: JsonRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidMessage,
        e.body_text(),
    )
}

fn mint_response(st: &AppState, req: &TokenRequest) -> Result<Json<serde_json::Value>, ApiError> {
    let (token, claims) = st
        .issuer
        .mint(req)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    Ok(Json(json!({
        "token": token,
        "identity": claims.sub,
        "room": claims.room,
        "grants": claims.grants,
        "expires_at": claims.exp,
    })))
}

async fn mint_token(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_api_secret(&st, &headers)?;
    let Json(req) = body.map_err(bad_body)?;
    mint_response(&st, &req)
}

#[derive(Debug, Deserialize)]
struct DevTokenRequest {
    identity: Option<String>,
    name: Option<String>,
    room: Option<String>,
}

/// Development mode only: anyone may get a token, for the web demo.
async fn dev_token(
    State(st): State<Arc<AppState>>,
    body: Result<Json<DevTokenRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(bad_body)?;
    let identity = req.identity.unwrap_or_else(|| {
        let n: u32 = rand::random();
        format!("guest-{n:08x}")
    });
    let req = TokenRequest {
        identity,
        name: req.name,
        room: Some(req.room.unwrap_or_else(|| ANY_ROOM.into())),
        grants: default_grants(),
        ttl: None,
    };
    mint_response(&st, &req)
}

async fn list_rooms(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&st, &headers)?;
    let rooms = st.hub.lock().rooms();
    Ok(Json(json!({ "rooms": rooms })))
}

async fn list_participants(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&st, &headers)?;
    let participants = st.hub.lock().participants(&room);
    match participants {
        Some(p) => Ok(Json(json!({ "room": room, "participants": p }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no room {room:?}"),
        )),
    }
}

/// The SFU's statistics of a room's participants (refreshed every stats interval) and
/// the room's totals.
async fn room_media(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&st, &headers)?;
    let stats: Option<Vec<_>> = st
        .media_stats
        .lock()
        .get(&room)
        .map(|shards| shards.values().flatten().cloned().collect());
    let Some(stats) = stats else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no media session in room {room:?}"),
        ));
    };
    let hub = st.hub.lock();
    let participants: Vec<serde_json::Value> = stats
        .iter()
        .map(|p| {
            json!({
                "sid": p.participant.to_string(),
                "identity": hub.identity_of_sid(p.participant.as_str()).map(|i| i.to_string()),
                "packets_in": p.packets_in,
                "bytes_in": p.bytes_in,
                "packets_policed": p.packets_policed,
                "packets_out": p.packets_out,
                "bytes_out": p.bytes_out,
                "packets_out_per_sec": p.packets_out_per_sec,
                "frames_in": p.frames_in,
                "frames_forwarded": p.frames_forwarded,
                "nacks_received": p.nacks_received,
                "nacks_sent": p.nacks_sent,
                "keyframe_requests_received": p.keyframe_requests_received,
                "keyframe_requests_sent": p.keyframe_requests_sent,
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "bandwidth_estimate_bps": p.bandwidth_estimate_bps,
                "remb_bps": p.remb_bps,
                "desired_bitrate_bps": p.desired_bitrate_bps,
                "minimum_bitrate_bps": p.minimum_bitrate_bps,
                "layer_switches": p.layer_switches,
                "tracks_paused": p.tracks_paused,
                "tracks_published": p.tracks_published,
                "tracks_subscribed": p.tracks_subscribed,
                "published": p.published.iter().map(published_json).collect::<Vec<_>>(),
                "subscribed": p.subscribed.iter().map(subscribed_json).collect::<Vec<_>>(),
                "quality": p.quality.as_ref().map(quality_json),
            })
        })
        .collect();
    let sum = |f: fn(&huddle_sfu::ParticipantStats) -> u64| stats.iter().map(f).sum::<u64>();
    Ok(Json(json!({
        "room": room,
        "participants": participants,
        "totals": {
            "packets_in": sum(|p| p.packets_in),
            "packets_out": sum(|p| p.packets_out),
            "bytes_in": sum(|p| p.bytes_in),
            "bytes_out": sum(|p| p.bytes_out),
            "packets_out_per_sec": stats.iter().map(|p| p.packets_out_per_sec).sum::<f64>(),
            "nacks": sum(|p| p.nacks_received),
            "keyframe_requests": sum(|p| p.keyframe_requests_received),
            "tracks": stats.iter().map(|p| p.tracks_published).sum::<usize>(),
        },
    })))
}

/// A participant's connection quality and the figures behind it.
fn quality_json(q: &huddle_sfu::ConnectionQuality) -> serde_json::Value {
    json!({
        "level": q.level.as_str(),
        "score": (q.mos * 100.0).round() / 100.0,
        "loss_up_percent": q.loss_up * 100.0,
        "loss_down_percent": q.loss_down * 100.0,
        "loss_scored_percent": q.loss_scored * 100.0,
        "jitter_ms": q.jitter.as_secs_f64() * 1000.0,
        "rtt_ms": q.rtt.map(|d| d.as_secs_f64() * 1000.0),
        "bandwidth_limited": q.bandwidth_limited,
    })
}

/// A picture size as `{"width","height"}`, or null.
fn size_json(size: Option<(u16, u16)>) -> serde_json::Value {
    size.map_or(
        serde_json::Value::Null,
        |(w, h)| json!({"width": w, "height": h}),
    )
}

/// A track its publisher sends: kind, bitrate or simulcast layers, picture size.
fn published_json(t: &huddle_sfu::PublishedTrackStats) -> serde_json::Value {
    json!({
        "track": t.track.to_string(),
        "kind": crate::media::kind(t.kind),
        "bitrate_bps": t.bitrate_bps,
        "size": size_json(t.size),
        "muted": t.muted,
        "layers": t.layers.iter().map(|l| json!({
            "rid": l.rid,
            "bitrate_bps": l.bitrate_bps,
            "active": l.active,
            "size": size_json(l.size),
        })).collect::<Vec<_>>(),
    })
}

/// A track as one subscriber receives it: the layer forwarded and the one awaited.
fn subscribed_json(t: &huddle_sfu::SubscribedTrackStats) -> serde_json::Value {
    json!({
        "track": t.track.to_string(),
        "publisher": t.publisher.to_string(),
        "max_quality": t.max_quality.as_str(),
        "max_size": size_json(t.max_size),
        "layer": t.layer,
        "pending_layer": t.pending_layer,
        "paused": t.paused,
        "held": t.held,
    })
}

async fn remove_participant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&st, &headers)?;
    let removed = st
        .hub
        .lock()
        .remove_participant(&room, &identity, Instant::now());
    st.wake_timers();
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{identity:?} is not in room {room:?}"),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    /// "audio" or "video"; both when absent.
    #[serde(default)]
    kind: Option<String>,
    muted: bool,
}

/// A moderator mutes or unmutes what a participant publishes, for everyone: the SFU
/// drops its frames until unmuted (its own client cannot undo it, neither by publishing
/// again nor by leaving the media session and joining it again while the room lasts),
/// and the room is told (`track_muted`). Answers the tracks that changed.
async fn mute_participant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
    body: Result<Json<MuteRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&st, &headers)?;
    let Json(req) = body.map_err(bad_body)?;
    let kind = match req.kind.as_deref() {
        None => None,
        Some(name) => Some(crate::media::parse_kind(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("kind {name:?}: \"audio\" or \"video\""),
            )
        })?),
    };
    let not_found = |what: String| ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what);
    let Some(sfu) = st.sfu.clone() else {
        return Err(not_found("the SFU is not enabled".into()));
    };
    // Every session of that identity in the room (one per device).
    let sids: Vec<String> = st
        .hub
        .lock()
        .participants(&room)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.identity == identity)
        .map(|p| p.sid)
        .collect();
    if sids.is_empty()
        || !st
            .hub
            .lock()
            .set_moderated(&room, &identity, kind, req.muted)
    {
        return Err(not_found(format!("{identity:?} is not in room {room:?}")));
    }
    // Recorded first, so a media session that starts meanwhile is muted when it joins.
    let mut tracks = Vec::new();
    for sid in sids {
        // A session without media has nothing to mute yet.
        if let Ok(changed) = sfu.mute(sid.as_str(), kind, req.muted).await {
            tracks.extend(changed.iter().map(|t| t.to_string()));
        }
    }
    Ok(Json(json!({ "tracks": tracks })))
}

async fn close_room(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&st, &headers)?;
    if st.hub.lock().close_room(&room, Instant::now()) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no room {room:?}"),
        ))
    }
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if !st.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or shutting down\n",
        )
            .into_response();
    }
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

pub(crate) fn encode_metrics(st: &AppState) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &st.registry) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode_metrics(&st),
    )
        .into_response()
}
