//! The shim's UDP driver: one client address on one side, one server address on the other.
//! The client sends to [`Relay::local_addr`]; the server sees the relay's upstream socket.
//! Each direction has its own [`Impairment`] and a timer heap of datagrams in flight.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::model::{Fate, Impairment, ImpairmentConfig, ImpairmentStats};

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams in flight per direction before new ones are dropped (bounds memory).
const MAX_IN_FLIGHT: usize = 100_000;

/// A running shim; stops when dropped.
pub struct Relay {
    local: SocketAddr,
    stats: Arc<Mutex<[ImpairmentStats; 2]>>,
    stop: CancellationToken,
}

impl Relay {
    /// Starts relaying between the first client that sends to the returned address and
    /// `server`, with `up` applied toward the server and `down` toward the client.
    pub async fn start(
        server: SocketAddr,
        up: ImpairmentConfig,
        down: ImpairmentConfig,
    ) -> std::io::Result<Relay> {
        let ip = if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let client_side = Arc::new(UdpSocket::bind(ip).await?);
        let server_side = Arc::new(UdpSocket::bind(ip).await?);
        server_side.connect(server).await?;
        let local = client_side.local_addr()?;
        let stats = Arc::new(Mutex::new([ImpairmentStats::default(); 2]));
        let stop = CancellationToken::new();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        tokio::spawn(direction(
            client_side.clone(),
            server_side.clone(),
            Impairment::new(up),
            Route::Up(client.clone()),
            (stats.clone(), 0),
            stop.clone(),
        ));
        tokio::spawn(direction(
            server_side,
            client_side,
            Impairment::new(down),
            Route::Down(client),
            (stats.clone(), 1),
            stop.clone(),
        ));
        Ok(Relay { local, stats, stop })
    }

    /// Where the client sends.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters toward the server and toward the client.
    pub fn stats(&self) -> (ImpairmentStats, ImpairmentStats) {
        let s = self.stats.lock().expect("not poisoned");
        (s[0], s[1])
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Which way a direction sends.
enum Route {
    /// From the client (remembered from the first datagram) to the connected server.
    Up(Arc<Mutex<Option<SocketAddr>>>),
    /// From the server to the remembered client.
    Down(Arc<Mutex<Option<SocketAddr>>>),
}

async fn direction(
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    mut model: Impairment,
    route: Route,
    (stats, slot): (Arc<Mutex<[ImpairmentStats; 2]>>, usize),
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // (deliver at, arrival number) -> datagram; the number keeps equal times in order.
    let mut heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut n = 0u64;
    loop {
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        let timer = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = from.recv_from(&mut buf) => {
                let Ok((len, src)) = r else { continue };
                match &route {
                    Route::Up(client) => {
                        let mut c = client.lock().expect("not poisoned");
                        match *c {
                            None => *c = Some(src),
                            Some(known) if known != src => continue,
                            Some(_) => {}
                        }
                    }
                    Route::Down(_) => {}
                }
                let fate = model.on_datagram(Instant::now(), len);
                stats.lock().expect("not poisoned")[slot] = model.stats;
                if let (Fate::Deliver(at), true) = (fate, heap.len() < MAX_IN_FLIGHT) {
                    n += 1;
                    heap.push(Reverse((at, n, buf[..len].to_vec())));
                }
            }
            _ = timer => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                    let Some(Reverse((_, _, data))) = heap.pop() else { break };
                    let _ = match &route {
                        Route::Up(_) => to.send(&data).await,
                        Route::Down(client) => {
                            let dest = *client.lock().expect("not poisoned");
                            match dest {
                                Some(d) => to.send_to(&data, d).await,
                                None => Ok(0),
                            }
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shim::Loss;

    async fn echo_server() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn relays_over_real_udp_with_the_configured_loss_and_delay() {
        let server = echo_server().await;
        let lossy = |seed| ImpairmentConfig {
            loss: Loss::Random(0.1),
            delay: Duration::from_millis(40),
            seed,
            ..Default::default()
        };
        let relay = Relay::start(server, lossy(1), lossy(2)).await.unwrap();
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        client.connect(relay.local_addr()).await.unwrap();
        let t0 = Instant::now();
        // Read while sending, so that the client's socket buffer never overflows: all loss
        // is the shim's.
        let reader = {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut got, mut first_rtt) = (0usize, None);
                let mut buf = [0u8; 16];
                while let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await
                {
                    first_rtt.get_or_insert(t0.elapsed());
                    got += 1;
                }
                (got, first_rtt)
            })
        };
        for i in 0..2000u32 {
            client.send(&i.to_be_bytes()).await.unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let (got, first_rtt) = reader.await.unwrap();
        let (up, down) = relay.stats();
        assert_eq!(up.received, 2000);
        assert_eq!(up.delivered + up.lost, 2000);
        assert_eq!(
            down.received, up.delivered,
            "the echo server answered all it got"
        );
        assert_eq!(got, down.delivered as usize);
        let rate = 1.0 - got as f64 / 2000.0;
        // Two 10% legs: 19% end to end, with room for sampling noise.
        assert!((rate - 0.19).abs() < 0.04, "loss {rate}");
        assert!(
            first_rtt.unwrap() >= Duration::from_millis(80),
            "{first_rtt:?}"
        );
    }
}
