//! The push webhook: for every new message, the members that had no device connected when
//! it was committed are posted to the app server (`chat.webhook_url`), which sends push
//! notifications. Bodies are signed with HMAC-SHA256 of `chat.webhook_secret`. Delivery
//! is retried a few times; a full queue drops notifications (counted), never messages:
//! the messages themselves wait in the store for the device's next sync.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::AnyPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::Feeds;
use super::metrics::ChatMetrics;
use super::store;
use super::wire::ChatEntry;

/// Notifications waiting to be posted.
pub(crate) const QUEUE: usize = 10_000;
/// Characters of the message text included as a preview.
const PREVIEW_CHARS: usize = 120;
const ATTEMPTS: u32 = 4;

/// A committed message to check for offline recipients.
#[derive(Debug, Clone)]
pub(crate) struct Undelivered {
    conversation: String,
    seq: i64,
    sender: String,
    server_ts: i64,
    preview: String,
}

impl Undelivered {
    pub(crate) fn from_entry(e: &ChatEntry) -> Self {
        Self {
            conversation: e.conversation.clone(),
            seq: e.seq,
            sender: e.sender.clone(),
            server_ts: e.server_ts,
            preview: e
                .text
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(PREVIEW_CHARS)
                .collect(),
        }
    }
}

/// The JSON body posted to the webhook.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub event: &'static str,
    pub conversation: &'a str,
    pub seq: i64,
    pub sender: &'a str,
    pub server_ts: i64,
    pub preview: &'a str,
    /// Members with no device connected.
    pub recipients: Vec<String>,
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", super::hex(&mac.finalize().into_bytes()))
}

pub(crate) struct Webhook {
    pub url: String,
    pub secret: Option<Vec<u8>>,
    pub pool: AnyPool,
    pub feeds: Arc<Feeds>,
    pub metrics: Arc<ChatMetrics>,
}

impl Webhook {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Undelivered>, stop: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "chat webhook client");
                return;
            }
        };
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev { Some(ev) => ev, None => return },
                _ = stop.cancelled() => return,
            };
            let members = match store::members(&self.pool, &ev.conversation).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "chat webhook: members");
                    self.metrics.webhook_failures.inc();
                    continue;
                }
            };
            let recipients: Vec<String> = members
                .into_iter()
                .filter(|m| *m != ev.sender && !self.feeds.is_online(m))
                .collect();
            if recipients.is_empty() {
                continue;
            }
            let body = WebhookBody {
                event: "chat.undelivered",
                conversation: &ev.conversation,
                seq: ev.seq,
                sender: &ev.sender,
                server_ts: ev.server_ts,
                preview: &ev.preview,
                recipients,
            };
            let bytes = match serde_json::to_vec(&body) {
                Ok(b) => b,
                Err(_) => continue,
            };
            if self.post(&client, bytes, &stop).await {
                self.metrics.webhook_sent.inc();
            } else {
                self.metrics.webhook_failures.inc();
            }
        }
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        body: Vec<u8>,
        stop: &CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let mut req = client
                .post(&self.url)
                .header("content-type", "application/json");
            if let Some(secret) = &self.secret {
                req = req.header("x-huddle-signature", signature(secret, &body));
            }
            match req.body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => tracing::debug!(status = %r.status(), attempt, "chat webhook refused"),
                Err(e) => tracing::debug!(error = %e, attempt, "chat webhook failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return false,
            }
            backoff *= 2;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
