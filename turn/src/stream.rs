//! Stream client legs (TCP and TLS, RFC 8656 §3.1): accepting under the connection caps,
//! framing STUN and padded ChannelData out of the byte stream, and a writer task per
//! connection so that a client that does not read loses frames instead of stalling the
//! shard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::driver::Shared;
use crate::server::{FiveTuple, Transport};
use crate::udp_io::MAX_DATAGRAM;

/// Frames queued toward one TCP client before newer ones are dropped.
const TCP_QUEUE: usize = 256;

/// Caps on stream (TCP/TLS) client connections, shared by all shards.
pub(crate) struct StreamLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A stream connection's place under the caps, given back when dropped.
pub(crate) struct StreamSlot(Arc<StreamLimits>, IpAddr);

impl StreamLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<StreamSlot> {
        let mut open = self.open.lock();
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max_total || per_ip >= self.max_per_ip {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, per_ip + 1);
        Some(StreamSlot(self.clone(), ip))
    }
}

impl std::ops::Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.1);
            }
        }
    }
}

pub(crate) async fn tcp_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let Ok((stream, client)) = accepted else {
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let Some(slot) = shared.stream_limits.acquire(client.ip()) else {
            // Over the caps: the connection is closed at once.
            shared
                .streams_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let tuple = FiveTuple {
                    transport: Transport::Tcp,
                    client,
                    server,
                };
                let conn = stream_connection(shared.clone(), tuple, stream);
                shared.tracker.spawn(async move {
                    conn.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let shared2 = shared.clone();
                shared.tracker.spawn(async move {
                    // A handshake that stalls must not hold a task forever.
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            let tuple = FiveTuple {
                                transport: Transport::Tls,
                                client,
                                server,
                            };
                            stream_connection(shared2, tuple, tls_stream).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
        }
    }
}

/// Length of the next complete STUN or ChannelData frame at the start of `buf`
/// (RFC 8656 §12.5: ChannelData is padded to 4 bytes over streams), `Err` when the stream
/// is not speaking STUN/TURN.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match buf[0] >> 6 {
        0 => 20 + len,
        1 => (4 + len).next_multiple_of(4),
        _ => return Err(()),
    };
    Ok((buf.len() >= total).then_some(total))
}

/// Serves one stream client leg (TCP or TLS).
async fn stream_connection<S>(shared: Arc<Shared>, tuple: FiveTuple, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    shared.tcp.write().insert(tuple, tx);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    'conn: loop {
        let n = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = reader.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame_len(&buf) {
                Err(()) => break 'conn,
                Ok(None) => break,
                Ok(Some(len)) => {
                    let route = shared.core.lock().handle_client(
                        Instant::now(),
                        tuple,
                        &buf[..len],
                        &mut out,
                    );
                    buf.drain(..len);
                    if let Some(route) = route {
                        shared.queue(route, &out);
                    }
                }
            }
        }
        shared.flush_queued();
        if buf.len() > MAX_DATAGRAM + 8 {
            break;
        }
    }
    shared.tcp.write().remove(&tuple);
    shared.core.lock().close_connection(&tuple);
    writer_task.abort();
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn stream_framing() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 1, 0, 4]), Ok(None));
        assert_eq!(frame_len(&[0u8; 24]), Ok(Some(20)));
        // ChannelData of 5 bytes occupies 12 with padding.
        let mut cd = vec![0x40, 0x00, 0x00, 0x05];
        cd.extend_from_slice(&[1; 8]);
        assert_eq!(frame_len(&cd), Ok(Some(12)));
        assert_eq!(frame_len(&[0xC0, 0, 0, 0]), Err(()));
    }
}
