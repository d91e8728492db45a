//! A synthetic participant's transport to the SFU: its own UDP socket, or one ICE-TCP
//! connection (RFC 6544, the active side) to the SFU's passive TCP candidate, its
//! packets framed with a two-byte length (RFC 4571), as a client behind a firewall that
//! blocks UDP connects.

use std::io;
use std::net::{IpAddr, SocketAddr};

use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::stamp;
use crate::{BenchError, Result};

/// Frames read ahead of the media loop on a TCP link.
const TCP_QUEUE: usize = 256;

pub enum Link {
    Udp(UdpSocket),
    Tcp {
        write: OwnedWriteHalf,
        /// Frames read by a task of its own, so that waiting for one is cancel-safe in
        /// the loop's select.
        frames: mpsc::Receiver<Vec<u8>>,
        local: SocketAddr,
        remote: SocketAddr,
        /// A frame being written: length and packet in one write.
        out: Vec<u8>,
    },
}

/// What [`Link::wait`] found.
pub enum Incoming {
    /// The UDP socket has datagrams: read them with [`Link::try_recv_udp`].
    Readable,
    /// One packet from the TCP connection, read just now.
    Frame(Vec<u8>),
    /// The TCP connection ended.
    Closed,
}

impl Link {
    /// The passive TCP candidate of the SFU's `answer` to connect to: on `server` if it
    /// advertises that address, else its first of `server`'s address family.
    pub fn tcp_candidate(answer: &str, server: IpAddr) -> Result<SocketAddr> {
        let candidates: Vec<SocketAddr> = answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_ascii_whitespace().collect();
                let passive = f.windows(2).any(|w| w == ["tcptype", "passive"]);
                let tcp = f.get(2).is_some_and(|p| p.eq_ignore_ascii_case("tcp"));
                let ip: IpAddr = f.get(4)?.parse().ok()?;
                let port: u16 = f.get(5)?.parse().ok()?;
                (passive && tcp).then_some(SocketAddr::new(ip, port))
            })
            .collect();
        candidates
            .iter()
            .find(|a| a.ip() == server)
            .or_else(|| candidates.iter().find(|a| a.is_ipv4() == server.is_ipv4()))
            .copied()
            .ok_or_else(|| {
                BenchError::Protocol(format!(
                    "the SFU's answer has no passive TCP candidate for {server} (is sfu.ice_tcp on?)"
                ))
            })
    }

    /// Connects to the SFU's passive candidate `remote` and adds the connection as
    /// `rtc`'s active TCP candidate. The stream goes to [`Link::tcp`] on the runtime the
    /// peer runs on.
    pub async fn connect_tcp(rtc: &mut Rtc, remote: SocketAddr) -> Result<std::net::TcpStream> {
        let connect = TcpStream::connect(remote);
        let stream = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| BenchError::Protocol(format!("TCP connection to {remote} timed out")))??;
        stream.set_nodelay(true)?;
        let candidate = Candidate::builder()
            .tcp()
            .host(stream.local_addr()?)
            .tcptype(TcpType::Active)
            .build()
            .map_err(|e| BenchError::Protocol(format!("webrtc: {e}")))?;
        rtc.add_local_candidate(candidate);
        Ok(stream.into_std()?)
    }

    /// Takes over a connected stream; must run inside the runtime the peer runs on.
    pub fn tcp(stream: std::net::TcpStream) -> Result<Link> {
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        let (local, remote) = (stream.local_addr()?, stream.peer_addr()?);
        let (mut read, write) = stream.into_split();
        let (tx, frames) = mpsc::channel(TCP_QUEUE);
        tokio::spawn(async move {
            let mut len = [0u8; 2];
            while read.read_exact(&mut len).await.is_ok() {
                let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if read.read_exact(&mut frame).await.is_err() || tx.send(frame).await.is_err() {
                    break;
                }
            }
        });
        Ok(Link::Tcp {
            write,
            frames,
            local,
            remote,
            out: Vec::with_capacity(1500),
        })
    }

    pub fn local(&self) -> io::Result<SocketAddr> {
        match self {
            Link::Udp(s) => s.local_addr(),
            Link::Tcp { local, .. } => Ok(*local),
        }
    }

    pub fn proto(&self) -> Protocol {
        match self {
            Link::Udp(_) => Protocol::Udp,
            Link::Tcp { .. } => Protocol::Tcp,
        }
    }

    /// The other end of a TCP link (every frame comes from it).
    pub fn remote(&self) -> Option<SocketAddr> {
        match self {
            Link::Udp(_) => None,
            Link::Tcp { remote, .. } => Some(*remote),
        }
    }

    /// Sends one packet to `destination` (a TCP link has only one).
    pub async fn send(&mut self, contents: &[u8], destination: SocketAddr) -> io::Result<()> {
        match self {
            Link::Udp(s) => s.send_to(contents, destination).await.map(|_| ()),
            Link::Tcp { write, out, .. } => {
                let len = u16::try_from(contents.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "packet over 65535 bytes")
                })?;
                out.clear();
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(contents);
                write.write_all(out).await
            }
        }
    }

    /// Waits for something to read.
    pub async fn wait(&mut self) -> io::Result<Incoming> {
        match self {
            Link::Udp(s) => s.readable().await.map(|()| Incoming::Readable),
            Link::Tcp { frames, .. } => Ok(frames
                .recv()
                .await
                .map_or(Incoming::Closed, Incoming::Frame)),
        }
    }

    /// Reads one datagram of a UDP link without waiting (`WouldBlock` when none).
    pub fn try_recv_udp(&self, buf: &mut [u8]) -> io::Result<stamp::Received> {
        match self {
            Link::Udp(s) => stamp::try_recv(s, buf),
            Link::Tcp { .. } => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n\
a=candidate:2 1 tcp 1518280447 10.0.0.5 7881 typ host tcptype passive\r\n\
a=candidate:3 1 tcp 1518280447 127.0.0.1 7881 typ host tcptype passive\r\n\
a=candidate:4 1 tcp 1518280447 ::1 7881 typ host tcptype passive\r\n";

    #[test]
    fn picks_the_servers_passive_tcp_candidate() {
        let at = |ip: &str| Link::tcp_candidate(ANSWER, ip.parse().unwrap()).unwrap();
        let addr = |a: &str| -> SocketAddr { a.parse().unwrap() };
        assert_eq!(at("127.0.0.1"), addr("127.0.0.1:7881"));
        assert_eq!(at("10.0.0.5"), addr("10.0.0.5:7881"));
        // Not advertised: the first of the family.
        assert_eq!(at("192.168.1.1"), addr("10.0.0.5:7881"));
        assert_eq!(at("::2"), addr("[::1]:7881"));
        let udp_only = "a=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n";
        assert!(Link::tcp_candidate(udp_only, "127.0.0.1".parse().unwrap()).is_err());
        // Malformed lines are skipped, not a panic.
        let junk = "a=candidate:\r\na=candidate:1 1 tcp x y z tcptype passive\r\n";
        assert!(Link::tcp_candidate(junk, "127.0.0.1".parse().unwrap()).is_err());
    }
}
