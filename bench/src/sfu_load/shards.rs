//! The threads the synthetic peers run on: each shard is one OS thread with a
//! current-thread tokio runtime, and a peer's media loop is a task on one of them, so a
//! shard drives many peers without locks between them.

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::Result;

/// Running shard threads; dropping them (or [`Shards::stop`]) ends every peer task.
pub struct Shards {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Ends the shard runtimes (their peers first get their own cancellation).
    stop: CancellationToken,
    next: usize,
}

impl Shards {
    pub fn start(n: usize) -> Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sfu-load-{i}"))
                    .spawn(move || rt.block_on(stop.cancelled()))?,
            );
        }
        Ok(Self {
            handles,
            threads,
            stop,
            next: 0,
        })
    }

    /// The shard for the next peer, round robin.
    pub fn next(&mut self) -> Handle {
        let h = self.handles[self.next % self.handles.len()].clone();
        self.next += 1;
        h
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.shutdown();
    }
}
