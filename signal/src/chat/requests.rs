//! Chat requests from a connection: validation, permissions, rate limits, and hand-off
//! to the writer or to a reading task.

use super::feed::DeviceFeed;
use super::wire::EntryKind;
use super::writer::{MembersChange, MembersOp, Post, WriteOp};
use super::*;

impl Chat {
    pub(super) async fn dispatch(
        self: &Arc<Self>,
        conn: &mut ChatConn,
        id: Option<RequestId>,
        msg: ClientMessage,
    ) -> Result<(), ProtocolError> {
        if !conn.claims.grants.chat {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "the access token does not grant chat",
            ));
        }
        match msg {
            ClientMessage::ChatSync(req) => self.sync(conn, id, req),
            ClientMessage::ChatSend(req) => {
                let conversation = self.writable(conn, &req.conversation)?;
                check_client_id("client_msg_id", &req.client_msg_id)?;
                if req.text.is_empty() && req.attachments.is_empty() {
                    return Err(invalid("a message needs text or attachments"));
                }
                self.check_text(&req.text)?;
                if req.attachments.len() > self.cfg.max_attachments {
                    return Err(invalid(format!(
                        "at most {} attachments per message",
                        self.cfg.max_attachments
                    )));
                }
                if let Some(bad) = req
                    .attachments
                    .iter()
                    .find(|a| !attachments::is_attachment_id(a))
                {
                    return Err(invalid(format!("{bad:?} is not an attachment id")));
                }
                let metadata = match req.metadata {
                    Some(v) if !v.is_null() => {
                        let s = serde_json::to_string(&v).map_err(|e| invalid(e.to_string()))?;
                        if s.len() > self.cfg.max_metadata_bytes {
                            return Err(invalid(format!(
                                "metadata is limited to {} bytes",
                                self.cfg.max_metadata_bytes
                            )));
                        }
                        Some(s)
                    }
                    _ => None,
                };
                self.rate_limit(conn)?;
                self.write(WriteOp::Post(Post {
                    origin: Self::origin(conn, id),
                    conversation,
                    client_msg_id: req.client_msg_id,
                    kind: EntryKind::Text,
                    text: Some(req.text),
                    reply_to: req.reply_to,
                    target_seq: None,
                    metadata,
                    attachments: req.attachments,
                }))
                .await
            }
            ClientMessage::ChatEdit(req) => {
                let conversation = self.writable(conn, &req.conversation)?;
                check_client_id("client_msg_id", &req.client_msg_id)?;
                if req.text.is_empty() {
                    return Err(invalid(
                        "an edit needs text; use chat_delete to remove a message",
                    ));
                }
                self.check_text(&req.text)?;
                self.rate_limit(conn)?;
                let origin = Self::origin(conn, id);
                let change = (EntryKind::Edit, Some(req.text), req.seq);
                self.write(WriteOp::Post(Post::change(
                    origin,
                    conversation,
                    req.client_msg_id,
                    change,
                )))
                .await
            }
            ClientMessage::ChatDelete(req) => {
                let conversation = self.writable(conn, &req.conversation)?;
                check_client_id("client_msg_id", &req.client_msg_id)?;
                self.rate_limit(conn)?;
                let origin = Self::origin(conn, id);
                let change = (EntryKind::Delete, None, req.seq);
                self.write(WriteOp::Post(Post::change(
                    origin,
                    conversation,
                    req.client_msg_id,
                    change,
                )))
                .await
            }
            ClientMessage::ChatReceived(req) => {
                let feed = self.following(conn, &req.conversation)?;
                if req.seq < 0 {
                    return Err(invalid("seq must not be negative"));
                }
                self.write(WriteOp::DeviceAck {
                    identity: conn.identity.clone(),
                    device: feed.device.clone(),
                    conversation: req.conversation.as_str().into(),
                    seq: req.seq,
                })
                .await
            }
            ClientMessage::ChatRead(req) => {
                self.following(conn, &req.conversation)?;
                if req.seq < 0 {
                    return Err(invalid("seq must not be negative"));
                }
                self.write(WriteOp::Read {
                    origin: Self::origin(conn, None),
                    conversation: req.conversation.as_str().into(),
                    seq: req.seq,
                })
                .await?;
                if id.is_some() {
                    Self::reply(
                        conn,
                        crate::protocol::encode(
                            &crate::protocol::ServerMessage::Ok {},
                            id.as_ref(),
                        ),
                    );
                }
                Ok(())
            }
            ClientMessage::ChatTyping(req) => {
                let me = self.following(conn, &req.conversation)?;
                let frame: Utf8Bytes = encode(
                    &ChatOut::ChatTyping {
                        conversation: &req.conversation,
                        identity: &conn.identity,
                        typing: req.typing,
                    },
                    None,
                )
                .into();
                for feed in self.feeds.of_conversation(&req.conversation) {
                    if feed.identity != me.identity {
                        feed.send_ephemeral(frame.clone());
                    }
                }
                Ok(())
            }
            ClientMessage::ChatHistory(req) => {
                self.readable_syntax(conn, &req.conversation)?;
                if req.before.is_some() && req.after.is_some() {
                    return Err(invalid("give before or after, not both"));
                }
                let limit = req.limit.unwrap_or(50).clamp(1, self.cfg.max_history_page);
                let this = self.clone();
                let claims = conn.claims.clone();
                let out = conn.out.clone();
                tokio::spawn(async move {
                    let frame = match this
                        .history(&claims, &req.conversation, req.before, req.after, limit)
                        .await
                    {
                        Ok((messages, has_more)) => encode(
                            &ChatOut::ChatHistory {
                                conversation: &req.conversation,
                                messages: &messages,
                                has_more,
                            },
                            id.as_ref(),
                        ),
                        Err(e) => crate::protocol::encode(&e.to_message(), id.as_ref()),
                    };
                    send_wait(&out, frame).await;
                });
                Ok(())
            }
            ClientMessage::ChatConversations {} => {
                let this = self.clone();
                let identity = conn.identity.clone();
                let out = conn.out.clone();
                tokio::spawn(async move {
                    let frame = match this.conversations(&identity).await {
                        Ok(list) => encode(
                            &ChatOut::ChatConversations {
                                conversations: &list,
                            },
                            id.as_ref(),
                        ),
                        Err(e) => crate::protocol::encode(&e.to_message(), id.as_ref()),
                    };
                    send_wait(&out, frame).await;
                });
                Ok(())
            }
            ClientMessage::ChatOpenDirect(req) => {
                check_name("with", &req.with).map_err(invalid)?;
                if req.with == conn.claims.sub {
                    return Err(invalid("a one-to-one conversation needs another identity"));
                }
                let conversation = direct_id(&conn.claims.sub, &req.with);
                self.members_op(
                    conn,
                    id,
                    MembersChange::OpenDirect {
                        conversation,
                        with: req.with,
                    },
                )
                .await
            }
            ClientMessage::ChatCreateGroup(req) => {
                check_name("name", &req.name).map_err(invalid)?;
                self.check_members(&req.members)?;
                if req.members.len() + 1 > self.cfg.max_group_members {
                    return Err(invalid(format!(
                        "a group has at most {} members",
                        self.cfg.max_group_members
                    )));
                }
                let conversation = format!("{GROUP_PREFIX}{}", uuid::Uuid::new_v4().simple());
                self.members_op(
                    conn,
                    id,
                    MembersChange::CreateGroup {
                        conversation,
                        name: req.name,
                        members: req.members,
                    },
                )
                .await
            }
            ClientMessage::ChatAddMembers(req) => {
                self.check_group_id(&req.conversation)?;
                self.check_members(&req.members)?;
                let max = self.cfg.max_group_members;
                self.members_op(
                    conn,
                    id,
                    MembersChange::Add {
                        conversation: req.conversation,
                        members: req.members,
                        max,
                    },
                )
                .await
            }
            ClientMessage::ChatRemoveMembers(req) => {
                self.check_group_id(&req.conversation)?;
                self.check_members(&req.members)?;
                self.members_op(
                    conn,
                    id,
                    MembersChange::Remove {
                        conversation: req.conversation,
                        members: req.members,
                    },
                )
                .await
            }
            _ => Err(ProtocolError::new(
                ErrorCode::Internal,
                "not a chat request",
            )),
        }
    }

    pub(super) fn check_text(&self, text: &str) -> Result<(), ProtocolError> {
        if text.len() > self.cfg.max_text_bytes {
            return Err(ProtocolError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "text is {} bytes; the limit is {}",
                    text.len(),
                    self.cfg.max_text_bytes
                ),
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid(
                "text must not contain control characters other than newlines and tabs",
            ));
        }
        Ok(())
    }

    pub(super) fn check_members(&self, members: &[String]) -> Result<(), ProtocolError> {
        if members.len() > self.cfg.max_group_members {
            return Err(invalid(format!(
                "a group has at most {} members",
                self.cfg.max_group_members
            )));
        }
        for m in members {
            check_name("member", m).map_err(invalid)?;
        }
        Ok(())
    }

    pub(super) fn check_group_id(&self, conv: &str) -> Result<(), ProtocolError> {
        if !conv.starts_with(GROUP_PREFIX) || conv.len() > 200 {
            return Err(invalid(
                "members can only be changed in a group conversation",
            ));
        }
        Ok(())
    }

    pub(super) fn rate_limit(&self, conn: &ChatConn) -> Result<(), ProtocolError> {
        self.limiter.check_key(&conn.identity).map_err(|_| {
            ProtocolError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} chat messages per second from this identity; not stored, retry later",
                    self.cfg.messages_per_second
                ),
            )
        })
    }

    /// Checks the shape of a conversation id and, for rooms, the token's claim.
    pub(super) fn readable_syntax(&self, conn: &ChatConn, conv: &str) -> Result<(), ProtocolError> {
        if conv.len() > 200 {
            return Err(invalid("conversation id too long"));
        }
        if let Some(room) = conv.strip_prefix(ROOM_PREFIX) {
            check_room_name(room).map_err(invalid)?;
            if !conn.claims.may_join(room) {
                return Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    format!("the access token does not allow room {room:?}"),
                ));
            }
            Ok(())
        } else if conv.starts_with(DIRECT_PREFIX) || conv.starts_with(GROUP_PREFIX) {
            Ok(())
        } else {
            Err(invalid(format!(
                "conversation ids start with {ROOM_PREFIX}, {DIRECT_PREFIX} or {GROUP_PREFIX}"
            )))
        }
    }

    pub(super) fn writable(&self, conn: &ChatConn, conv: &str) -> Result<Arc<str>, ProtocolError> {
        self.readable_syntax(conn, conv)?;
        if conv.starts_with(ROOM_PREFIX) && !conn.claims.grants.chat {
            return Err(ProtocolError::new(ErrorCode::Forbidden, "no chat grant"));
        }
        Ok(conv.into())
    }

    /// The device feed, if this connection synced and follows `conv`.
    pub(super) fn following(
        &self,
        conn: &ChatConn,
        conv: &str,
    ) -> Result<Arc<DeviceFeed>, ProtocolError> {
        let feed = conn.feed.as_ref().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::InvalidState,
                "send chat_sync first to name this device",
            )
        })?;
        if !feed.follows(conv) {
            return Err(not_member());
        }
        Ok(feed.clone())
    }

    pub(super) async fn write(&self, op: WriteOp) -> Result<(), ProtocolError> {
        self.writer.send(op).await.map_err(|_| {
            ProtocolError::new(ErrorCode::ShuttingDown, "chat is shutting down; not stored")
        })
    }

    pub(super) async fn members_op(
        self: &Arc<Self>,
        conn: &ChatConn,
        id: Option<RequestId>,
        change: MembersChange,
    ) -> Result<(), ProtocolError> {
        let (done, result) = oneshot::channel();
        self.write(WriteOp::Members(MembersOp {
            actor: conn.identity.clone(),
            change,
            done,
        }))
        .await?;
        let out = conn.out.clone();
        tokio::spawn(async move {
            let frame = match result.await {
                Ok(Ok(info)) => encode(
                    &ChatOut::ChatConversation {
                        conversation: &info,
                    },
                    id.as_ref(),
                ),
                Ok(Err(e)) => crate::protocol::encode(&e.to_message(), id.as_ref()),
                Err(_) => return,
            };
            send_wait(&out, frame).await;
        });
        Ok(())
    }
}
