//! ICE-TCP accepting out of file descriptors: a connection the listener cannot take
//! (EMFILE) stays in the kernel's backlog, and the shard must not spin retrying it; once
//! a descriptor is free it is taken. A file of its own: it lowers the process's
//! descriptor limit, which no other test may share.

#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use common::{sfu_threads, stat_ticks};
use huddle_sfu::{Sfu, SfuConfig};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The one shard thread's `/proc` stat file, opened while descriptors are free.
fn shard_stat() -> File {
    let threads = sfu_threads();
    assert_eq!(threads.len(), 1, "one shard thread: {threads:?}");
    File::open(threads[0].join("stat")).unwrap()
}

/// CPU ticks (user + system) of the thread whose stat file this is, read again.
fn ticks(stat: &mut File) -> u64 {
    let mut s = String::new();
    stat.seek(SeekFrom::Start(0)).unwrap();
    stat.read_to_string(&mut s).unwrap();
    stat_ticks(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_shard_waits_and_then_accepts() {
    let config = SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        tcp_bind: Some("127.0.0.1:0".parse().unwrap()),
        shards: 1,
        ..SfuConfig::default()
    };
    let (sfu, _events) = Sfu::start(config).await.unwrap();
    let addr = sfu.tcp_addr().expect("ICE-TCP on");
    let m = sfu.metrics().clone();
    let mut stat = shard_stat();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, open + 64, hard).unwrap();
    // Every descriptor taken, then one given back for the client's end.
    let mut filler = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        filler.push(f);
    }
    filler.pop();
    let client = std::net::TcpStream::connect(addr).unwrap();
    // The shard's accept fails (the connection waits in the backlog): over half a
    // second of that, a loop retrying at once would use the whole half second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = ticks(&mut stat);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spent = ticks(&mut stat) - before;
    assert_eq!(m.tcp_connections.get(), 0, "accepted without a descriptor?");
    // Clock ticks are 10 ms: a spinning loop would show about 50.
    assert!(spent <= 10, "the shard spun: {spent} ticks in 0.5 s");
    // A descriptor free again: the connection is taken within the pause.
    filler.pop();
    let start = Instant::now();
    while m.tcp_connections.get() == 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        m.tcp_connections.get(),
        1,
        "not accepted after a descriptor was freed"
    );
    drop(filler);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    drop(client);
    sfu.shutdown().await.unwrap();
}
