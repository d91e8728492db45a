//! Reads for chat requests (history, conversation lists, attachments) and the retention
//! task.

use super::*;

impl Chat {
    pub(super) async fn history(
        &self,
        claims: &Claims,
        conv: &str,
        before: Option<i64>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<wire::ChatEntry>, bool), ProtocolError> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(error = %e, "chat history read failed");
            self.metrics.store_errors.inc();
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unavailable; retry",
            )
        };
        if !conv.starts_with(ROOM_PREFIX)
            && store::membership(&self.pool, conv, &claims.sub)
                .await
                .map_err(fail)?
                .is_none()
        {
            return Err(not_member());
        }
        let mut page = match after {
            Some(after) => store::entries_between(&self.pool, conv, after, i64::MAX, limit + 1)
                .await
                .map_err(fail)?,
            None => {
                let mut p =
                    store::entries_before(&self.pool, conv, before.unwrap_or(i64::MAX), limit + 1)
                        .await
                        .map_err(fail)?;
                if p.len() > limit {
                    p.remove(0);
                    return Ok((p, true));
                }
                p
            }
        };
        let has_more = page.len() > limit;
        page.truncate(limit);
        Ok((page, has_more))
    }

    pub(super) async fn conversations(
        &self,
        identity: &str,
    ) -> Result<Vec<wire::ConversationInfo>, ProtocolError> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(error = %e, "chat conversations read failed");
            self.metrics.store_errors.inc();
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unavailable; retry",
            )
        };
        let mut out = Vec::new();
        for m in store::memberships(&self.pool, identity)
            .await
            .map_err(fail)?
        {
            out.push(
                store::conversation_info(&self.pool, &m, identity)
                    .await
                    .map_err(fail)?,
            );
        }
        Ok(out)
    }

    pub(super) async fn record_attachment(
        &self,
        id: &str,
        content_type: &str,
        size: u64,
        uploader: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO chat_attachments (id, content_type, size, uploader, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(content_type)
        .bind(size as i64)
        .bind(uploader)
        .bind(unix_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO chat_attachment_owners (attachment_id, identity) VALUES ($1, $2) \
             ON CONFLICT (attachment_id, identity) DO NOTHING",
        )
        .bind(id)
        .bind(uploader)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub(super) async fn attachment_type(&self, id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT content_type FROM chat_attachments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub(super) async fn may_download(
        &self,
        id: &str,
        claims: &Claims,
    ) -> Result<bool, sqlx::Error> {
        store::may_download(&self.pool, id, &claims.sub, |room| claims.may_join(room)).await
    }
}

/// Deletes entries older than the retention period, every so often.
pub(super) async fn retention(pool: AnyPool, keep: Duration, stop: CancellationToken) {
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let cutoff = unix_ms() - keep.as_millis() as i64;
        let r = sqlx::query("DELETE FROM chat_messages WHERE server_ts < $1")
            .bind(cutoff)
            .execute(&pool)
            .await;
        match r {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(deleted = done.rows_affected(), "chat retention");
                let _ = sqlx::query(
                    "DELETE FROM chat_message_attachments WHERE NOT EXISTS (SELECT 1 FROM chat_messages m \
                     WHERE m.conversation_id = chat_message_attachments.conversation_id \
                     AND m.seq = chat_message_attachments.seq)",
                )
                .execute(&pool)
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "chat retention failed"),
        }
    }
}
