//! One-to-one peer-to-peer calls: invite, ring, accept, reject, cancel, hang up and busy,
//! with SDP and trickle ICE relayed between the two parties. All of the callee's connected
//! devices ring; the first to accept takes the call and the others are told it was
//! answered elsewhere. Unanswered calls end after `calls.ring_timeout`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use base64::Engine;

use crate::hub::{Hub, SessionKey, Timer, internal};
use crate::protocol::{
    CallEndReason, ClientMessage, ErrorCode, Peer, ProtocolError, RejectReason, RequestId, SdpType,
    ServerMessage, SessionDescription, encode,
};

/// Largest ICE candidate object relayed (serialised JSON).
const MAX_CANDIDATE_BYTES: usize = 2048;

pub(crate) struct Call {
    caller: SessionKey,
    /// The callee's devices still ringing, until one answers.
    ringing: Vec<SessionKey>,
    /// The callee's device that answered.
    callee: Option<SessionKey>,
}

fn call_not_found(call_id: &str) -> ProtocolError {
    let mut id = call_id.to_owned();
    id.truncate(64);
    ProtocolError::new(
        ErrorCode::CallNotFound,
        format!("no call {id:?} for this session"),
    )
}

fn check_sdp(sdp: &Option<SessionDescription>, want: SdpType) -> Result<(), ProtocolError> {
    match sdp {
        Some(d) if d.kind != want => Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("sdp.type must be {want:?} here, got {:?}", d.kind),
        )),
        _ => Ok(()),
    }
}

impl Hub {
    /// Acknowledges a request that has no other result, when it carried an id.
    fn ack(&mut self, key: SessionKey, id: Option<&RequestId>) {
        if id.is_some() {
            self.respond(key, id, &ServerMessage::Ok {});
        }
    }

    pub(crate) fn handle_call(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        match msg {
            ClientMessage::CallInvite { to, sdp, metadata } => {
                self.invite(key, id, to, sdp, metadata, now)
            }
            ClientMessage::CallRinging { call_id } => {
                let call = self
                    .calls
                    .get(call_id.as_str())
                    .ok_or_else(|| call_not_found(&call_id))?;
                if !call.ringing.contains(&key) {
                    return Err(call_not_found(&call_id));
                }
                let caller = call.caller;
                self.respond(caller, None, &ServerMessage::CallRinging { call_id });
                self.ack(key, id);
                Ok(())
            }
            ClientMessage::CallAccept { call_id, sdp } => {
                check_sdp(&sdp, SdpType::Answer)?;
                let call_key: Arc<str> = call_id.as_str().into();
                let call = self
                    .calls
                    .get(&call_key)
                    .ok_or_else(|| call_not_found(&call_id))?;
                if !call.ringing.contains(&key) {
                    return Err(call_not_found(&call_id));
                }
                if self.sessions.get(&key).is_some_and(|s| s.call.is_some()) {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidState,
                        "this session is already in a call",
                    ));
                }
                let call = self
                    .calls
                    .get_mut(&call_key)
                    .ok_or_else(|| internal("no call"))?;
                call.callee = Some(key);
                let others: Vec<SessionKey> =
                    call.ringing.drain(..).filter(|k| *k != key).collect();
                let caller = call.caller;
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.call = Some(call_key.clone());
                }
                let ended: Utf8Bytes = encode(
                    &ServerMessage::CallEnded {
                        call_id: call_id.clone(),
                        reason: CallEndReason::AnsweredElsewhere,
                    },
                    None,
                )
                .into();
                for k in others {
                    self.push(k, ended.clone());
                }
                tracing::info!(call = %call_id, "call answered");
                self.respond(caller, None, &ServerMessage::CallAccepted { call_id, sdp });
                self.ack(key, id);
                Ok(())
            }
            ClientMessage::CallReject { call_id, reason } => {
                let call = self
                    .calls
                    .get(call_id.as_str())
                    .ok_or_else(|| call_not_found(&call_id))?;
                if !call.ringing.contains(&key) {
                    return Err(call_not_found(&call_id));
                }
                let reason = match reason {
                    Some(RejectReason::Busy) => CallEndReason::Busy,
                    _ => CallEndReason::Rejected,
                };
                self.end_call(&call_id, reason, Some(key), now);
                self.ack(key, id);
                Ok(())
            }
            ClientMessage::CallCancel { call_id } | ClientMessage::CallHangup { call_id } => {
                let call = self
                    .calls
                    .get(call_id.as_str())
                    .ok_or_else(|| call_not_found(&call_id))?;
                let reason = if call.caller == key || call.callee == Some(key) {
                    if call.callee.is_some() {
                        CallEndReason::Hangup
                    } else {
                        CallEndReason::Cancelled
                    }
                } else if call.ringing.contains(&key) {
                    CallEndReason::Rejected
                } else {
                    return Err(call_not_found(&call_id));
                };
                self.end_call(&call_id, reason, Some(key), now);
                self.ack(key, id);
                Ok(())
            }
            ClientMessage::CallSdp { call_id, sdp } => {
                let targets = self.relay_targets(key, &call_id)?;
                let frame: Utf8Bytes =
                    encode(&ServerMessage::CallSdp { call_id, sdp }, None).into();
                for k in targets {
                    self.push(k, frame.clone());
                }
                self.ack(key, id);
                Ok(())
            }
            ClientMessage::CallIce { call_id, candidate } => {
                if !(candidate.is_object() || candidate.is_null()) {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidMessage,
                        "candidate must be an RTCIceCandidateInit object or null",
                    ));
                }
                let len = serde_json::to_string(&candidate)
                    .map(|s| s.len())
                    .unwrap_or(usize::MAX);
                if len > MAX_CANDIDATE_BYTES {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidMessage,
                        format!("candidate is {len} bytes; the limit is {MAX_CANDIDATE_BYTES}"),
                    ));
                }
                let targets = self.relay_targets(key, &call_id)?;
                let frame: Utf8Bytes =
                    encode(&ServerMessage::CallIce { call_id, candidate }, None).into();
                for k in targets {
                    self.push(k, frame.clone());
                }
                self.ack(key, id);
                Ok(())
            }
            _ => Err(internal("not a call message")),
        }
    }

    fn invite(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
        to: String,
        sdp: Option<SessionDescription>,
        metadata: Option<serde_json::Value>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        check_sdp(&sdp, SdpType::Offer)?;
        if let Some(m) = &metadata {
            let len = serde_json::to_string(m)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if len > self.cfg.rooms.max_metadata_bytes {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    "call metadata too large",
                ));
            }
        }
        let s = self
            .sessions
            .get(&key)
            .ok_or_else(|| internal("no session"))?;
        if !s.grants.publish {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "the access token does not grant publish",
            ));
        }
        if *s.identity == *to {
            return Err(ProtocolError::new(
                ErrorCode::InvalidMessage,
                "cannot call yourself",
            ));
        }
        if s.call.is_some() {
            return Err(ProtocolError::new(
                ErrorCode::InvalidState,
                "this session is already in a call",
            ));
        }
        let from = Peer {
            identity: s.identity.to_string(),
            name: s.name.clone(),
        };
        let devices: Vec<SessionKey> = self
            .by_identity
            .get(to.as_str())
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|k| self.is_connected(*k))
                    .collect()
            })
            .unwrap_or_default();
        if devices.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::CalleeUnavailable,
                format!("{to:?} is not connected"),
            ));
        }
        let mut raw = [0u8; 12];
        rand::fill(&mut raw[..]);
        let call_id = format!(
            "C_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        self.respond(
            key,
            id,
            &ServerMessage::CallInvited {
                call_id: call_id.clone(),
            },
        );
        let busy = devices
            .iter()
            .any(|k| self.sessions.get(k).is_some_and(|s| s.call.is_some()));
        if busy {
            self.respond(
                key,
                None,
                &ServerMessage::CallEnded {
                    call_id,
                    reason: CallEndReason::Busy,
                },
            );
            self.call_ended_metric(CallEndReason::Busy);
            return Ok(());
        }
        let call_key: Arc<str> = call_id.as_str().into();
        if let Some(s) = self.sessions.get_mut(&key) {
            s.call = Some(call_key.clone());
        }
        let incoming: Utf8Bytes = encode(
            &ServerMessage::CallIncoming {
                call_id: call_id.clone(),
                from,
                sdp,
                metadata,
            },
            None,
        )
        .into();
        for k in &devices {
            self.push(*k, incoming.clone());
        }
        self.calls.insert(
            call_key.clone(),
            Call {
                caller: key,
                ringing: devices,
                callee: None,
            },
        );
        self.metrics.calls_active.set(self.calls.len() as i64);
        self.schedule(now + self.cfg.calls.ring_timeout, Timer::CallRing(call_key));
        tracing::info!(call = %call_id, %to, "call ringing");
        Ok(())
    }

    fn is_connected(&self, key: SessionKey) -> bool {
        self.sessions.get(&key).is_some_and(|s| s.is_connected())
    }

    /// Who receives SDP/ICE that `key` sends on `call_id`.
    fn relay_targets(
        &self,
        key: SessionKey,
        call_id: &str,
    ) -> Result<Vec<SessionKey>, ProtocolError> {
        let call = self
            .calls
            .get(call_id)
            .ok_or_else(|| call_not_found(call_id))?;
        if call.caller == key {
            Ok(match call.callee {
                Some(c) => vec![c],
                None => call.ringing.clone(),
            })
        } else if call.callee == Some(key) {
            Ok(vec![call.caller])
        } else if call.ringing.contains(&key) {
            Err(ProtocolError::new(
                ErrorCode::InvalidState,
                "accept the call before sending SDP or ICE",
            ))
        } else {
            Err(call_not_found(call_id))
        }
    }

    pub(crate) fn ring_timeout(&mut self, call_id: &str, now: Instant) {
        if self.calls.get(call_id).is_some_and(|c| c.callee.is_none()) {
            tracing::info!(call = %call_id, "call unanswered");
            self.end_call(call_id, CallEndReason::Timeout, None, now);
        }
    }

    /// Ends a call and tells every party but `initiator`. Devices that were only ringing
    /// hear `rejected_elsewhere` when another device declined.
    pub(crate) fn end_call(
        &mut self,
        call_id: &str,
        reason: CallEndReason,
        initiator: Option<SessionKey>,
        _now: Instant,
    ) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        for k in [Some(call.caller), call.callee].into_iter().flatten() {
            if let Some(s) = self.sessions.get_mut(&k) {
                s.call = None;
            }
        }
        let tell = |hub: &mut Hub, k: SessionKey, reason: CallEndReason| {
            if Some(k) != initiator {
                hub.respond(
                    k,
                    None,
                    &ServerMessage::CallEnded {
                        call_id: call_id.to_owned(),
                        reason,
                    },
                );
            }
        };
        tell(self, call.caller, reason);
        if let Some(c) = call.callee {
            tell(self, c, reason);
        }
        let ringing_reason = match reason {
            CallEndReason::Rejected | CallEndReason::Busy => CallEndReason::RejectedElsewhere,
            r => r,
        };
        for k in call.ringing {
            tell(self, k, ringing_reason);
        }
        tracing::info!(call = %call_id, ?reason, "call ended");
        self.call_ended_metric(reason);
    }

    /// Ends the calls `key` placed or answered, and stops it ringing for others.
    pub(crate) fn end_calls_of(&mut self, key: SessionKey, reason: CallEndReason, now: Instant) {
        if let Some(call_id) = self.sessions.get(&key).and_then(|s| s.call.clone()) {
            self.end_call(&call_id, reason, Some(key), now);
        }
        let mut orphaned = Vec::new();
        for (id, call) in self.calls.iter_mut() {
            if call.ringing.contains(&key) {
                call.ringing.retain(|k| *k != key);
                if call.ringing.is_empty() && call.callee.is_none() {
                    orphaned.push(id.clone());
                }
            }
        }
        for id in orphaned {
            self.end_call(&id, reason, Some(key), now);
        }
    }
}
