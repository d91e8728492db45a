//! Delivery to devices. Each connected device that ran `chat_sync` has a [`DeviceFeed`]
//! holding, per conversation, the last seq put on its connection. A committed entry is
//! pushed straight onto the connection when it is the next one the device needs (the fast
//! path); otherwise (the device is catching up, its queue is full, or a seq was skipped) a
//! catch-up task reads the missing range from the store and sends it in order. So each
//! device sees every entry once, in seq order, with no gaps, whatever the timing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use sqlx::AnyPool;
use tokio::sync::mpsc::{WeakSender, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::metrics::ChatMetrics;
use super::store;
use super::wire::{ChatOut, encode};

/// Entries read from the store per catch-up query.
const CATCH_UP_PAGE: usize = 256;

/// Where one conversation's delivery to one device stands.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Every entry up to this seq is on the connection.
    delivered: i64,
    /// Highest seq known to be committed.
    latest: i64,
    /// A catch-up task owns delivery for this conversation.
    catching_up: bool,
}

/// One connected device of an identity.
pub struct DeviceFeed {
    pub(crate) identity: Arc<str>,
    pub(crate) device: Arc<str>,
    /// The connection's outbound queue; weak so that the connection ends when the hub
    /// lets go of it.
    out: WeakSender<Utf8Bytes>,
    cursors: Mutex<HashMap<Arc<str>, Cursor>>,
    /// Cancelled when the connection ends.
    pub(crate) closed: CancellationToken,
}

impl DeviceFeed {
    pub(crate) fn new(identity: Arc<str>, device: Arc<str>, out: WeakSender<Utf8Bytes>) -> Self {
        Self {
            identity,
            device,
            out,
            cursors: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
        }
    }

    /// Whether the device receives this conversation.
    pub(crate) fn follows(&self, conv: &str) -> bool {
        self.cursors.lock().contains_key(conv)
    }

    /// Starts following `conv` from `delivered`, with a catch-up pending. Entries offered
    /// before [`DeviceFeed::start`] only raise `latest`.
    /// Returns false if the device already followed `conv` (then nothing changes).
    pub(crate) fn hold(&self, conv: &Arc<str>) -> bool {
        let mut cursors = self.cursors.lock();
        if cursors.contains_key(conv) {
            return false;
        }
        cursors.insert(
            conv.clone(),
            Cursor {
                delivered: -1,
                latest: 0,
                catching_up: true,
            },
        );
        true
    }

    /// Sets where delivery starts; a catch-up must follow.
    pub(crate) fn start(&self, conv: &Arc<str>, from: i64, last_seq: i64) {
        let mut cursors = self.cursors.lock();
        let c = cursors.entry(conv.clone()).or_insert(Cursor {
            delivered: from,
            latest: last_seq,
            catching_up: true,
        });
        c.delivered = from;
        c.latest = c.latest.max(last_seq);
        // The caller starts a catch-up, which hands over to the live path once level.
        c.catching_up = true;
    }

    pub(crate) fn unfollow(&self, conv: &str) {
        self.cursors.lock().remove(conv);
    }

    /// Offers a committed entry. Returns true if a catch-up must be started.
    fn offer(&self, conv: &str, seq: i64, frame: &Utf8Bytes, metrics: &ChatMetrics) -> bool {
        let mut cursors = self.cursors.lock();
        let Some(c) = cursors.get_mut(conv) else {
            return false;
        };
        c.latest = c.latest.max(seq);
        if c.catching_up || c.delivered >= seq {
            return false;
        }
        if c.delivered == seq - 1 {
            let Some(out) = self.out.upgrade() else {
                return false;
            };
            match out.try_send(frame.clone()) {
                Ok(()) => {
                    c.delivered = seq;
                    metrics.delivered_live.inc();
                    return false;
                }
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(_)) => {}
            }
        }
        c.catching_up = true;
        true
    }

    /// The range a catch-up should send next, `(delivered, latest]`; `None` (and the live
    /// path takes over again) once the device is level or stopped following.
    fn catch_up_range(&self, conv: &str) -> Option<(i64, i64)> {
        let mut cursors = self.cursors.lock();
        let c = cursors.get_mut(conv)?;
        if c.delivered >= c.latest {
            c.catching_up = false;
            return None;
        }
        Some((c.delivered, c.latest))
    }

    /// Records that everything up to `seq` is on the connection; false if the device no
    /// longer follows `conv`.
    fn mark_delivered(&self, conv: &str, seq: i64) -> bool {
        match self.cursors.lock().get_mut(conv) {
            Some(c) => {
                c.delivered = c.delivered.max(seq);
                true
            }
            None => false,
        }
    }

    /// Sends a frame that is not part of the log (receipts, typing): best effort.
    pub(crate) fn send_ephemeral(&self, frame: Utf8Bytes) {
        if let Some(out) = self.out.upgrade() {
            let _ = out.try_send(frame);
        }
    }

    /// Sends a frame in order with everything before it, waiting for queue space.
    pub(crate) async fn send(&self, frame: Utf8Bytes) -> bool {
        match self.out.upgrade() {
            Some(out) => tokio::select! {
                r = out.send(frame) => r.is_ok(),
                _ = self.closed.cancelled() => false,
            },
            None => false,
        }
    }
}

/// Every connected device, by conversation and by identity.
#[derive(Default)]
pub struct Feeds {
    index: Mutex<FeedIndex>,
}

#[derive(Default)]
struct FeedIndex {
    by_conv: HashMap<Arc<str>, Vec<Arc<DeviceFeed>>>,
    by_identity: HashMap<Arc<str>, Vec<Arc<DeviceFeed>>>,
}

impl Feeds {
    pub(crate) fn add_device(&self, feed: &Arc<DeviceFeed>) {
        let mut ix = self.index.lock();
        ix.by_identity
            .entry(feed.identity.clone())
            .or_default()
            .push(feed.clone());
    }

    pub(crate) fn subscribe(&self, feed: &Arc<DeviceFeed>, conv: &Arc<str>) {
        let mut ix = self.index.lock();
        let list = ix.by_conv.entry(conv.clone()).or_default();
        if !list.iter().any(|f| Arc::ptr_eq(f, feed)) {
            list.push(feed.clone());
        }
    }

    pub(crate) fn unsubscribe(&self, feed: &Arc<DeviceFeed>, conv: &str) {
        let mut ix = self.index.lock();
        if let Some(list) = ix.by_conv.get_mut(conv) {
            list.retain(|f| !Arc::ptr_eq(f, feed));
            if list.is_empty() {
                ix.by_conv.remove(conv);
            }
        }
        feed.unfollow(conv);
    }

    /// Forgets a device whose connection ended.
    pub(crate) fn remove_device(&self, feed: &Arc<DeviceFeed>) {
        feed.closed.cancel();
        let mut ix = self.index.lock();
        ix.by_conv.retain(|_, list| {
            list.retain(|f| !Arc::ptr_eq(f, feed));
            !list.is_empty()
        });
        if let Some(list) = ix.by_identity.get_mut(&feed.identity) {
            list.retain(|f| !Arc::ptr_eq(f, feed));
            if list.is_empty() {
                ix.by_identity.remove(&feed.identity);
            }
        }
    }

    pub(crate) fn of_conversation(&self, conv: &str) -> Vec<Arc<DeviceFeed>> {
        self.index
            .lock()
            .by_conv
            .get(conv)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn of_identity(&self, identity: &str) -> Vec<Arc<DeviceFeed>> {
        self.index
            .lock()
            .by_identity
            .get(identity)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn is_online(&self, identity: &str) -> bool {
        self.index.lock().by_identity.contains_key(identity)
    }

    /// Offers a committed entry to every device following its conversation, starting
    /// catch-ups where the fast path cannot deliver it.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        conv: &Arc<str>,
        seq: i64,
        frame: &Utf8Bytes,
        pool: &AnyPool,
        metrics: &Arc<ChatMetrics>,
    ) {
        for feed in self.of_conversation(conv) {
            if feed.offer(conv, seq, frame, metrics) {
                spawn_catch_up(feed, conv.clone(), pool.clone(), metrics.clone());
            }
        }
    }
}

/// Sends `conv`'s missing entries to `feed` from the store, in order, until the device is
/// level with the latest commit; then hands delivery back to the fast path.
pub(crate) fn spawn_catch_up(
    feed: Arc<DeviceFeed>,
    conv: Arc<str>,
    pool: AnyPool,
    metrics: Arc<ChatMetrics>,
) {
    tokio::spawn(async move {
        while let Some((from, upto)) = feed.catch_up_range(&conv) {
            let page = match store::entries_between(&pool, &conv, from, upto, CATCH_UP_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, conversation = %conv, "chat catch-up read failed");
                    metrics.store_errors.inc();
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => continue,
                        _ = feed.closed.cancelled() => return,
                    }
                }
            };
            // A short page means everything up to `upto` that still exists was read
            // (retention may have removed older entries).
            let reached = if page.len() < CATCH_UP_PAGE {
                upto
            } else {
                page.last().map_or(upto, |e| e.seq)
            };
            for entry in &page {
                let frame: Utf8Bytes = encode(&ChatOut::ChatMessage { entry }, None).into();
                if !feed.send(frame).await {
                    return;
                }
                metrics.delivered_catch_up.inc();
                if !feed.mark_delivered(&conv, entry.seq) {
                    return;
                }
            }
            feed.mark_delivered(&conv, reached);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::sync::mpsc;

    fn frame(seq: i64) -> Utf8Bytes {
        seq.to_string().into()
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// The writer commits the next seq and offers it.
        Commit,
        /// The connection writes up to n queued frames to the socket.
        Drain(usize),
        /// The catch-up task sends one entry from the store, if it has room.
        CatchUpStep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Commit),
            2 => (1usize..6).prop_map(Op::Drain),
            2 => Just(Op::CatchUpStep),
        ]
    }

    /// Drives one feed through an arbitrary interleaving of commits, queue drains and
    /// catch-up steps (the store holds every committed seq) and returns what reached the
    /// socket.
    fn run(ops: &[Op], queue: usize, from: i64, preexisting: i64) -> (Vec<i64>, i64) {
        let metrics = ChatMetrics::default();
        let (tx, mut rx) = mpsc::channel(queue);
        let feed = DeviceFeed::new("alice".into(), "d".into(), tx.downgrade());
        let conv: Arc<str> = "room:r".into();
        let mut committed = preexisting;
        feed.hold(&conv);
        feed.start(&conv, from, committed);
        let mut runner = true;
        let mut socket = Vec::new();
        let step = |runner: &mut bool| {
            if !*runner {
                return;
            }
            match feed.catch_up_range(&conv) {
                None => *runner = false,
                Some((delivered, _)) => {
                    if tx.try_send(frame(delivered + 1)).is_ok() {
                        assert!(feed.mark_delivered(&conv, delivered + 1));
                    }
                }
            }
        };
        for op in ops {
            match op {
                Op::Commit => {
                    committed += 1;
                    if feed.offer(&conv, committed, &frame(committed), &metrics) {
                        assert!(!runner, "a second catch-up would duplicate entries");
                        runner = true;
                    }
                }
                Op::Drain(n) => {
                    for _ in 0..*n {
                        match rx.try_recv() {
                            Ok(f) => socket.push(f.as_str().parse().unwrap()),
                            Err(_) => break,
                        }
                    }
                }
                Op::CatchUpStep => step(&mut runner),
            }
        }
        // Quiesce: the connection keeps reading and the catch-up finishes.
        for _ in 0..10_000 {
            while let Ok(f) = rx.try_recv() {
                socket.push(f.as_str().parse().unwrap());
            }
            if !runner {
                break;
            }
            step(&mut runner);
        }
        (socket, committed)
    }

    proptest! {
        #[test]
        fn every_entry_reaches_the_device_once_in_order(
            ops in proptest::collection::vec(op(), 0..200),
            queue in 1usize..8,
            preexisting in 0i64..20,
            behind in 0i64..20,
        ) {
            let from = (preexisting - behind).max(0);
            let (socket, committed) = run(&ops, queue, from, preexisting);
            let want: Vec<i64> = (from + 1..=committed).collect();
            prop_assert_eq!(socket, want);
        }
    }

    #[test]
    fn the_live_path_sends_directly_when_level() {
        let metrics = ChatMetrics::default();
        let (tx, mut rx) = mpsc::channel(4);
        let feed = DeviceFeed::new("a".into(), "d".into(), tx.downgrade());
        let conv: Arc<str> = "room:r".into();
        feed.hold(&conv);
        feed.start(&conv, 0, 0);
        assert_eq!(feed.catch_up_range(&conv), None);
        assert!(!feed.offer(&conv, 1, &frame(1), &metrics));
        assert_eq!(rx.try_recv().unwrap().as_str(), "1");
        assert_eq!(metrics.delivered_live.get(), 1);
        // A skipped seq hands over to a catch-up instead of leaving a gap.
        assert!(feed.offer(&conv, 3, &frame(3), &metrics));
        assert!(rx.try_recv().is_err());
        assert_eq!(feed.catch_up_range(&conv), Some((1, 3)));
        // Offers for a conversation the device does not follow are ignored.
        assert!(!feed.offer("dm:x", 1, &frame(1), &metrics));
    }
}
