//! A participant's signalling, over the real WebSocket protocol (docs/protocol.md
//! "Media (SFU)"): token from the REST API, `join`, `media_join`, the client's
//! `media_offer`, then `media_answer {offer_id}` to every offer the SFU pushes. The media
//! loop runs on a shard; offers reach it through a channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::peer::{MediaCmd, MediaSpec, Peer, PeerStats};
use crate::server::Target;
use crate::signal_load::{Ws, next_json};
use crate::{BenchError, Result};

/// Counters of the signalling side, over all peers.
#[derive(Debug, Default)]
pub struct SignalStats {
    /// `error` responses other than `stale_offer` (which glare makes normal).
    pub errors: AtomicU64,
    /// `media_left` pushes: the SFU ended a media session.
    pub media_left: AtomicU64,
}

/// Who a participant is and where its media loop runs.
pub struct Participant {
    pub id: u32,
    pub room: String,
    pub identity: String,
    pub spec: MediaSpec,
    /// Whether it publishes; a participant that does not only receives.
    pub publish: bool,
    pub epoch: Instant,
    pub stats: Arc<PeerStats>,
    pub shard: tokio::runtime::Handle,
    /// Where its media goes ([`route_to`] the server).
    pub route: Route,
    /// Over ICE-TCP instead of UDP.
    pub tcp: bool,
}

/// The addresses media travels between.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// This host's, where a media socket binds.
    pub local: std::net::IpAddr,
    /// The server's (the host of its URL).
    pub server: std::net::IpAddr,
}

/// The server at `base` (`http://host:port`) and the address of this host that traffic
/// to it leaves from: 127.0.0.1 for a server on loopback, the namespace's own address
/// when the clients run in a network namespace of their own. Connecting a UDP socket
/// sends nothing; it only picks the route.
pub fn route_to(base: &str) -> Result<Route> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| BenchError::Protocol(format!("server URL {base}: {e}")))?;
    let server = url
        .socket_addrs(|| None)?
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::Protocol(format!("no address for {base}")))?;
    let unspecified: std::net::IpAddr = if server.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = std::net::UdpSocket::bind((unspecified, 0))?;
    probe.connect(server)?;
    Ok(Route {
        local: probe.local_addr()?.ip(),
        server: server.ip(),
    })
}

async fn token(
    http: &reqwest::Client,
    target: &Target,
    identity: &str,
    room: &str,
) -> Result<String> {
    let resp: Value = http
        .post(format!("{}/v1/tokens", target.base))
        .bearer_auth(&target.api_secret)
        .json(&json!({"identity": identity, "room": room}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    resp["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Protocol(format!("no token in {resp}")))
}

/// Sends a request and waits for the response with its `id`, skipping pushes. A push
/// `media_offer` arriving while our own offer is outstanding is dropped: on glare the
/// client's offer wins and the SFU offers again afterwards (docs/protocol.md).
async fn request(ws: &mut Ws, body: Value, expect: &str) -> Result<Value> {
    let id = body["id"].clone();
    ws.send(Message::text(body.to_string())).await?;
    loop {
        let m = next_json(ws).await?;
        if m["id"] == id {
            if m["type"] != expect {
                return Err(BenchError::Protocol(format!("expected {expect}, got {m}")));
            }
            return Ok(m);
        }
    }
}

/// Joins, negotiates and then serves the SFU's offers until `cancel`. Returns once the
/// session is set up (`ready` fires) or failed; the rest runs in a spawned task.
pub async fn connect(
    http: &reqwest::Client,
    target: &Target,
    p: Participant,
    signals: Arc<SignalStats>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let t = token(http, target, &p.identity, &p.room).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("{}?access_token={t}", target.ws_url()),
        None,
        true,
    )
    .await?;
    let welcome = next_json(&mut ws).await?;
    if welcome["type"] != "welcome" {
        return Err(BenchError::Protocol(format!(
            "expected welcome, got {welcome}"
        )));
    }
    request(
        &mut ws,
        json!({"type":"join","id":"j","room":p.room}),
        "joined",
    )
    .await?;
    request(
        &mut ws,
        json!({"type":"media_join","id":"mj"}),
        "media_joined",
    )
    .await?;
    let (mut peer, offer, pending) = Peer::offer(
        p.id,
        p.publish,
        p.spec.video.is_some(),
        p.route.local,
        p.tcp,
        p.spec.red,
    )?;
    let answer = request(
        &mut ws,
        json!({"type":"media_offer","id":"mo","sdp":offer}),
        "media_answer",
    )
    .await?;
    let sdp = answer["sdp"]
        .as_str()
        .ok_or_else(|| BenchError::Protocol(format!("media_answer without sdp: {answer}")))?;
    if p.tcp {
        peer.connect_tcp(sdp, p.route.server).await?;
    }
    peer.accept_answer(pending, sdp)?;
    let (tx, rx) = mpsc::channel(8);
    p.shard
        .spawn(peer.run(p.spec, p.epoch, p.stats, rx, cancel.clone()));
    Ok(tokio::spawn(serve_offers(ws, tx, signals, cancel)))
}

/// Relays the SFU's offers to the media loop and its answers back, until `cancel`.
async fn serve_offers(
    mut ws: Ws,
    media: mpsc::Sender<MediaCmd>,
    signals: Arc<SignalStats>,
    cancel: CancellationToken,
) {
    let mut n = 0u64;
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return,
        };
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            signals.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match m["type"].as_str() {
            Some("media_offer") => {
                let (Some(offer_id), Some(sdp)) = (m["offer_id"].as_u64(), m["sdp"].as_str())
                else {
                    signals.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (reply, answer) = oneshot::channel();
                let cmd = MediaCmd::ApplyOffer {
                    sdp: sdp.to_owned(),
                    reply,
                };
                if media.send(cmd).await.is_err() {
                    return;
                }
                let Ok(Ok(sdp)) = answer.await else {
                    signals.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                n += 1;
                let body = json!({"type":"media_answer","id":format!("a{n}"),"offer_id":offer_id,"sdp":sdp});
                if ws.send(Message::text(body.to_string())).await.is_err() {
                    return;
                }
            }
            Some("error") if m["code"] != "stale_offer" => {
                tracing::debug!(%text, "sfu-load: server error");
                signals.errors.fetch_add(1, Ordering::Relaxed);
            }
            Some("media_left") => {
                signals.media_left.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}
