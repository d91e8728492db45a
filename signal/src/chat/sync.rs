//! `chat_sync`: registering a device and working out where each of its conversations
//! resumes, without a gap between what is read from the store and what is committed
//! meanwhile.

use super::*;

impl Chat {
    pub(super) fn sync(
        self: &Arc<Self>,
        conn: &mut ChatConn,
        id: Option<RequestId>,
        req: wire::SyncRequest,
    ) -> Result<(), ProtocolError> {
        check_client_id("device", &req.device)?;
        if conn.feed.is_some() {
            return Err(ProtocolError::new(
                ErrorCode::InvalidState,
                "this connection already synced; reconnect to sync again",
            ));
        }
        let feed = Arc::new(DeviceFeed::new(
            conn.identity.clone(),
            req.device.as_str().into(),
            conn.out.clone(),
        ));
        self.feeds.add_device(&feed);
        conn.feed = Some(feed.clone());
        let this = self.clone();
        let room = conn
            .claims
            .room
            .clone()
            .filter(|r| r != crate::auth::ANY_ROOM && check_room_name(r).is_ok());
        tokio::spawn(async move {
            match this.catch_up(&feed, room, req, id.as_ref()).await {
                Ok((frame, started)) => {
                    feed.send(frame.into()).await;
                    // Each conversation's catch-up runs only after chat_synced is queued.
                    for conv in started {
                        spawn_catch_up(feed.clone(), conv, this.pool.clone(), this.metrics.clone());
                    }
                }
                Err(e) => {
                    this.feeds.remove_device(&feed);
                    feed.send(crate::protocol::encode(&e.to_message(), id.as_ref()).into())
                        .await;
                }
            }
        });
        Ok(())
    }

    /// Subscribes the device to its conversations and works out where each resumes.
    /// Returns `chat_synced` and the conversations whose catch-up must start.
    pub(super) async fn catch_up(
        &self,
        feed: &Arc<DeviceFeed>,
        room: Option<String>,
        req: wire::SyncRequest,
        id: Option<&RequestId>,
    ) -> Result<(String, Vec<Arc<str>>), ProtocolError> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(error = %e, "chat sync read failed");
            self.metrics.store_errors.inc();
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unavailable; reconnect and sync again",
            )
        };
        if let Some(room) = room {
            let (done, result) = oneshot::channel();
            self.write(WriteOp::EnsureRoom {
                conversation: format!("{ROOM_PREFIX}{room}").into(),
                identity: feed.identity.clone(),
                done,
            })
            .await?;
            result
                .await
                .map_err(|_| ProtocolError::new(ErrorCode::ShuttingDown, "shutting down"))??;
        }
        // Subscribe first, then read where each log ends: an entry committed in between
        // is then either in what we read or offered to the feed.
        // Hold every conversation, then read again until no new one appears: the last
        // read then saw every held conversation's log end after it was held.
        let mut ours: HashSet<Arc<str>> = HashSet::new();
        let mut members = store::memberships(&self.pool, &feed.identity)
            .await
            .map_err(fail)?;
        for _ in 0..8 {
            let mut new = false;
            for m in &members {
                let conv: Arc<str> = m.id.as_str().into();
                if feed.hold(&conv) {
                    self.feeds.subscribe(feed, &conv);
                    ours.insert(conv);
                    new = true;
                }
            }
            members = store::memberships(&self.pool, &feed.identity)
                .await
                .map_err(fail)?;
            if !new {
                break;
            }
        }
        let stored: std::collections::HashMap<String, i64> =
            store::device_cursors(&self.pool, &feed.identity, &feed.device)
                .await
                .map_err(fail)?
                .into_iter()
                .collect();
        let backlog = self.cfg.new_device_backlog as i64;
        let mut out = Vec::with_capacity(members.len());
        for m in &members {
            let conv: Arc<str> = m.id.as_str().into();
            let from = match req.cursors.get(&m.id).or_else(|| stored.get(&m.id)) {
                Some(&seq) => seq.clamp(0, m.last_seq),
                None => (m.last_seq - backlog).max(0),
            };
            if ours.contains(&conv) {
                feed.start(&conv, from, m.last_seq);
            } else if !feed.follows(&conv) {
                // Left again, or joined after the last read (then followed by the writer).
                continue;
            }
            out.push(SyncedConversation {
                id: m.id.clone(),
                kind: m.kind.clone(),
                name: m.name.clone(),
                from_seq: from,
                last_seq: m.last_seq,
                unread: store::unread(&self.pool, &m.id, &feed.identity, m.read_seq)
                    .await
                    .map_err(fail)?,
            });
        }
        let frame = encode(
            &ChatOut::ChatSynced {
                device: &feed.device,
                conversations: &out,
            },
            id,
        );
        // Held but no longer a member (left between the reads): let go.
        let current: HashSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
        for conv in ours.iter().filter(|c| !current.contains(c.as_ref())) {
            self.feeds.unsubscribe(feed, conv);
        }
        ours.retain(|c| current.contains(c.as_ref()));
        Ok((frame, ours.into_iter().collect()))
    }
}
