//! Prometheus metrics of chat.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub struct ChatMetrics {
    /// Log entries committed (messages, edits, deletes).
    pub entries_stored: Counter,
    /// Sends that repeated a stored client message id and were acked again.
    pub duplicate_sends: Counter,
    /// Requests refused (not a member, bad target, invalid, rate limited).
    pub rejected: Counter,
    /// Entries put on a connection by the live path.
    pub delivered_live: Counter,
    /// Entries put on a connection by a catch-up (resume, slow device).
    pub delivered_catch_up: Counter,
    /// Store transactions committed by the writer, and their sizes.
    pub commits: Counter,
    pub commit_batch: Histogram,
    /// Time from the start of a batch's transaction to its commit.
    pub commit_seconds: Histogram,
    /// Store operations that failed (the requests were refused, nothing acked).
    pub store_errors: Counter,
    /// Push webhook calls that failed after retries, or were dropped on overflow.
    pub webhook_failures: Counter,
    pub webhook_sent: Counter,
    pub attachments_uploaded: Counter,
}

impl Default for ChatMetrics {
    fn default() -> Self {
        Self {
            entries_stored: Counter::default(),
            duplicate_sends: Counter::default(),
            rejected: Counter::default(),
            delivered_live: Counter::default(),
            delivered_catch_up: Counter::default(),
            commits: Counter::default(),
            commit_batch: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            commit_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
            ]),
            store_errors: Counter::default(),
            webhook_failures: Counter::default(),
            webhook_sent: Counter::default(),
            attachments_uploaded: Counter::default(),
        }
    }
}

impl ChatMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("huddle_chat");
        r.register(
            "entries_stored",
            "Chat log entries committed",
            self.entries_stored.clone(),
        );
        r.register(
            "duplicate_sends",
            "Chat sends of an already stored client message id (acked again)",
            self.duplicate_sends.clone(),
        );
        r.register("rejected", "Chat requests refused", self.rejected.clone());
        r.register(
            "delivered_live",
            "Chat entries delivered on the live path",
            self.delivered_live.clone(),
        );
        r.register(
            "delivered_catch_up",
            "Chat entries delivered by catch-up from the store",
            self.delivered_catch_up.clone(),
        );
        r.register(
            "commits",
            "Chat store transactions committed",
            self.commits.clone(),
        );
        r.register(
            "commit_batch",
            "Requests per chat store transaction",
            self.commit_batch.clone(),
        );
        r.register(
            "commit_seconds",
            "Chat store transaction time, begin to commit",
            self.commit_seconds.clone(),
        );
        r.register(
            "store_errors",
            "Chat store operations that failed",
            self.store_errors.clone(),
        );
        r.register(
            "webhook_sent",
            "Push webhook calls delivered",
            self.webhook_sent.clone(),
        );
        r.register(
            "webhook_failures",
            "Push webhook calls that failed or were dropped",
            self.webhook_failures.clone(),
        );
        r.register(
            "attachments_uploaded",
            "Attachments uploaded",
            self.attachments_uploaded.clone(),
        );
    }
}
