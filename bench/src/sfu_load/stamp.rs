//! When a datagram reached a participant's socket, as the kernel stamped it
//! (`SO_TIMESTAMPNS`), not when the participant's task got round to reading it. With a
//! hundred peers on two client threads, a datagram can wait in its socket while the
//! thread serves the others; that wait is the clients' scheduling, not the SFU's
//! latency. On loopback the kernel queues the datagram in the SFU's own send call, so the
//! stamp is when the SFU sent it.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

/// A datagram read from a socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub source: SocketAddr,
    /// When the kernel queued it on the socket; the read time where no stamp exists.
    pub stamped: Instant,
    /// When it was read.
    pub read: Instant,
}

/// Asks the kernel to stamp every datagram `socket` receives. False where it cannot
/// (other systems): reads then carry their own time as the stamp.
///
/// Linux turns stamping on at arrival through a system-wide switch it flips in deferred
/// work when the first socket asks (and off when the last one closes): until then a
/// datagram is stamped when it is read, so the first few may carry their read time.
pub fn enable(socket: &std::net::UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(socket, sockopt::ReceiveTimestampns, &true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// Reads one datagram if one is queued (`WouldBlock` otherwise).
pub fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket.try_io(tokio::io::Interest::READABLE, || recv_now(socket, buf))
}

#[cfg(target_os = "linux")]
fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use nix::sys::time::TimeSpec;
    use std::os::fd::AsRawFd;

    let mut space = nix::cmsg_space!(TimeSpec);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let read = Instant::now();
    let source = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut stamped = read;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                stamped = instant_of(ts, read);
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        source,
        stamped,
        read,
    })
}

#[cfg(not(target_os = "linux"))]
fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let (len, source) = socket.try_recv_from(buf)?;
    let read = Instant::now();
    Ok(Received {
        len,
        source,
        stamped: read,
        read,
    })
}

#[cfg(target_os = "linux")]
fn socket_addr(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// The monotonic instant of a wall-clock stamp: `read` minus the stamp's age, measured
/// on the wall clock at the same moment (so no offset between the clocks is assumed).
/// A stamp from the future (a clock step) counts as `read`.
#[cfg(target_os = "linux")]
fn instant_of(ts: nix::sys::time::TimeSpec, read: Instant) -> Instant {
    let Ok(nanos) = u64::try_from(ts.tv_nsec()) else {
        return read;
    };
    let Ok(secs) = u64::try_from(ts.tv_sec()) else {
        return read;
    };
    let stamp = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos as u32);
    let age = std::time::SystemTime::now()
        .duration_since(stamp)
        .unwrap_or_default();
    read.checked_sub(age).unwrap_or(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_is_stamped_when_it_arrives_not_when_it_is_read() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let stamping = enable(&rx);
        let to = rx.local_addr().unwrap();
        let rx = UdpSocket::from_std(rx).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Until the kernel's deferred switch to stamping at arrival (see `enable`) has
        // happened, datagrams are stamped when read: wait for a probe stamped at least
        // 5 ms before it was read (other tests' sockets turn the switch on and off).
        let mut buf = [0u8; 64];
        if cfg!(target_os = "linux") {
            let mut on = false;
            for _ in 0..100 {
                tx.send_to(b"probe", to).unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                rx.readable().await.unwrap();
                let r = try_recv(&rx, &mut buf).unwrap();
                if r.read.saturating_duration_since(r.stamped)
                    >= std::time::Duration::from_millis(5)
                {
                    on = true;
                    break;
                }
            }
            assert!(on, "no datagram stamped at arrival in 100 tries");
        }
        let before = Instant::now();
        tx.send_to(b"hello", to).unwrap();
        let sent = Instant::now();
        // Read well after it arrived.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        rx.readable().await.unwrap();
        let r = try_recv(&rx, &mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.source, tx.local_addr().unwrap());
        assert!(r.read >= before + std::time::Duration::from_millis(50));
        if cfg!(target_os = "linux") {
            assert!(stamping, "SO_TIMESTAMPNS is refused");
            // Queued during the send (loopback delivers in the sender's call); the two
            // clocks' readings may differ by a few microseconds.
            let slack = std::time::Duration::from_millis(2);
            assert!(
                r.stamped + slack >= before && r.stamped <= sent + slack,
                "stamp {:?} after the send began, read {:?} after",
                r.stamped.saturating_duration_since(before),
                r.read.saturating_duration_since(before)
            );
        } else {
            assert_eq!(r.stamped, r.read);
        }
        assert!(matches!(
            try_recv(&rx, &mut buf),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
    }
}
