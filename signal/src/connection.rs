//! The task that drives one WebSocket: it reads and decodes client messages into the hub,
//! writes the session's outbound queue to the socket, pings the client and closes the
//! connection when it falls silent.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::auth::Claims;
use crate::limits::ConnectionSlot;
use crate::metrics::TypeLabel;
use crate::protocol::{ClientMessage, Decoded, ErrorCode, ProtocolError, decode};
use crate::service::AppState;

/// Close code for a connection that stopped answering pings.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4000;
/// Close code when the server ended the session (resumed elsewhere, removed, too slow).
pub const CLOSE_SESSION_ENDED: u16 = 4001;
/// Close code while the server shuts down ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

fn type_label(msg: &ClientMessage) -> &'static str {
    match msg {
        ClientMessage::Ping {} => "ping",
        ClientMessage::Join { .. } => "join",
        ClientMessage::Leave {} => "leave",
        ClientMessage::ListParticipants {} => "list_participants",
        ClientMessage::UpdateParticipant { .. } => "update_participant",
        ClientMessage::GetIceServers {} => "get_ice_servers",
        ClientMessage::CallInvite { .. } => "call_invite",
        ClientMessage::CallRinging { .. } => "call_ringing",
        ClientMessage::CallAccept { .. } => "call_accept",
        ClientMessage::CallReject { .. } => "call_reject",
        ClientMessage::CallCancel { .. } => "call_cancel",
        ClientMessage::CallHangup { .. } => "call_hangup",
        ClientMessage::CallSdp { .. } => "call_sdp",
        ClientMessage::CallIce { .. } => "call_ice",
        ClientMessage::ChatSync(_) => "chat_sync",
        ClientMessage::ChatSend(_) => "chat_send",
        ClientMessage::ChatEdit(_) => "chat_edit",
        ClientMessage::ChatDelete(_) => "chat_delete",
        ClientMessage::ChatReceived(_) => "chat_received",
        ClientMessage::ChatRead(_) => "chat_read",
        ClientMessage::ChatTyping(_) => "chat_typing",
        ClientMessage::ChatHistory(_) => "chat_history",
        ClientMessage::ChatConversations {} => "chat_conversations",
        ClientMessage::ChatOpenDirect(_) => "chat_open_direct",
        ClientMessage::ChatCreateGroup(_) => "chat_create_group",
        ClientMessage::ChatAddMembers(_) => "chat_add_members",
        ClientMessage::ChatRemoveMembers(_) => "chat_remove_members",
        ClientMessage::MediaJoin {} => "media_join",
        ClientMessage::MediaOffer { .. } => "media_offer",
        ClientMessage::MediaAnswer { .. } => "media_answer",
        ClientMessage::MediaSubscribe { .. } => "media_subscribe",
        ClientMessage::MediaAutoSubscribe { .. } => "media_auto_subscribe",
        ClientMessage::MediaPin { .. } => "media_pin",
        ClientMessage::MediaLeave {} => "media_leave",
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Runs the connection until either side ends it, then reports the disconnect to the hub.
pub(crate) async fn run(
    mut socket: WebSocket,
    st: Arc<AppState>,
    claims: Claims,
    resume_token: Option<String>,
    slot: ConnectionSlot,
    peer: SocketAddr,
) {
    let (tx, mut rx) = mpsc::channel(st.hub_config.signal.outbound_queue.max(1));
    let mut chat = st.chat.connection(&claims, tx.downgrade());
    let attached = st
        .hub
        .lock()
        .connect(&claims, resume_token.as_deref(), tx, Instant::now());
    st.wake_timers();
    st.metrics.connections_accepted.inc();
    let span = tracing::info_span!("conn", identity = %claims.sub, %peer, key = attached.key);
    async move {
        let signal = &st.hub_config.signal;
        tracing::debug!(resumed = attached.resumed, "connected");
        let quota = Quota::per_second(NonZeroU32::new(signal.messages_per_second.max(1)).expect("max(1)"))
            .allow_burst(NonZeroU32::new(signal.message_burst.max(1)).expect("max(1)"));
        let limiter = RateLimiter::direct(quota);
        let mut heartbeat = tokio::time::interval(signal.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut last_seen = Instant::now();
        let clean = loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(frame) => {
                        // Write everything queued, then flush once: one syscall for a burst.
                        let mut ok = socket.feed(Message::Text(frame)).await.is_ok();
                        let mut more = 0;
                        while ok && more < WRITE_BATCH {
                            match rx.try_recv() {
                                Ok(frame) => ok = socket.feed(Message::Text(frame)).await.is_ok(),
                                Err(_) => break,
                            }
                            more += 1;
                        }
                        if !ok || socket.flush().await.is_err() {
                            break false;
                        }
                    }
                    None => {
                        // The hub let go of this connection: shutdown, resumed elsewhere or ended.
                        if st.shutdown.is_cancelled() {
                            close(&mut socket, CLOSE_GOING_AWAY, "server shutting down").await;
                        } else {
                            close(&mut socket, CLOSE_SESSION_ENDED, "session ended").await;
                        }
                        break false;
                    }
                },
                inbound = socket.recv() => {
                    last_seen = Instant::now();
                    match inbound {
                        Some(Ok(Message::Text(text))) => {
                            if text.len() > signal.max_message_bytes {
                                reject(&st, attached.key, "", ProtocolError::new(
                                    ErrorCode::MessageTooLarge,
                                    format!("message is {} bytes; the limit is {}", text.len(), signal.max_message_bytes),
                                ));
                                continue;
                            }
                            if limiter.check().is_err() {
                                reject(&st, attached.key, &text, ProtocolError::new(
                                    ErrorCode::RateLimited,
                                    format!("more than {} messages per second; message dropped", signal.messages_per_second),
                                ));
                                continue;
                            }
                            match decode(&text) {
                                Decoded::Request(id, msg) if msg.is_chat() => {
                                    st.metrics.messages_in.get_or_create(&TypeLabel { r#type: type_label(&msg) }).inc();
                                    st.chat.handle(&mut chat, id, msg).await;
                                }
                                Decoded::Request(id, msg) if msg.is_media() => {
                                    st.metrics.messages_in.get_or_create(&TypeLabel { r#type: type_label(&msg) }).inc();
                                    crate::media::handle(&st, attached.key, id, msg);
                                }
                                Decoded::Request(id, msg) => {
                                    st.metrics.messages_in.get_or_create(&TypeLabel { r#type: type_label(&msg) }).inc();
                                    st.hub.lock().handle(attached.key, id, msg, Instant::now());
                                    st.wake_timers();
                                }
                                Decoded::Invalid(id, e) => {
                                    st.metrics.messages_in.get_or_create(&TypeLabel { r#type: "invalid" }).inc();
                                    st.hub.lock().send_error(attached.key, id.as_ref(), &e);
                                }
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            reject(&st, attached.key, "", ProtocolError::new(
                                ErrorCode::BinaryNotSupported,
                                "the protocol uses JSON text frames only",
                            ));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => break true,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket error");
                            break false;
                        }
                        None => break false,
                    }
                }
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > signal.heartbeat_timeout {
                        tracing::info!("heartbeat timeout");
                        close(&mut socket, CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout").await;
                        break false;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break false;
                    }
                }
            }
        };
        tracing::debug!(clean, "disconnected");
        st.chat.disconnect(&chat);
        st.hub.lock().disconnect(attached.key, attached.generation, clean, Instant::now());
        st.wake_timers();
        drop(slot);
    }
    .instrument(span)
    .await
}

/// Sends an error for a message that was not processed, echoing its id when it has one.
fn reject(st: &AppState, key: crate::hub::SessionKey, text: &str, e: ProtocolError) {
    st.metrics
        .messages_in
        .get_or_create(&TypeLabel { r#type: "invalid" })
        .inc();
    let id = match decode(text) {
        Decoded::Request(id, _) | Decoded::Invalid(id, _) => id,
    };
    st.hub.lock().send_error(key, id.as_ref(), &e);
}
