//! Zero-copy helpers for the packets on the relay's hot path: telling STUN from
//! ChannelData, ChannelData framing (RFC 8656 §12.4), and Send/Data indications with only
//! XOR-PEER-ADDRESS and DATA (§10), which would otherwise cost a full STUN decode and an
//! allocation per packet. Everything else goes through stun-rs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
pub const ATTR_DATA: u16 = 0x0013;
pub const ATTR_DONT_FRAGMENT: u16 = 0x001A;
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// Message type of a Send indication (method 0x006, class indication).
pub const SEND_INDICATION: u16 = 0x0016;
/// Message type of a Data indication (method 0x007, class indication).
pub const DATA_INDICATION: u16 = 0x0017;
/// Channel numbers accepted by ChannelBind. RFC 8656 §12 allows 0x4000–0x4FFF; RFC 5766
/// allowed up to 0x7FFE and older clients still pick from that range, so it is accepted.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFE;

/// What a datagram from a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    ChannelData,
    Other,
}

/// Classifies by the first two bits (RFC 7983 demultiplexing: 0b00 STUN, 0b01 ChannelData).
pub fn classify(data: &[u8]) -> Kind {
    match data.first() {
        Some(b) if b >> 6 == 0 && data.len() >= HEADER_LEN => Kind::Stun,
        Some(b) if b >> 6 == 1 && data.len() >= 4 => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// Parses a ChannelData message: `(channel, payload)`. Over TCP the payload is padded to
/// 4 bytes; `data` may carry that padding.
pub fn parse_channel_data(data: &[u8]) -> Option<(u16, &[u8])> {
    if data.len() < 4 {
        return None;
    }
    let channel = u16::from_be_bytes([data[0], data[1]]);
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    if !(CHANNEL_MIN..=0x7FFF).contains(&channel) || data.len() < 4 + len {
        return None;
    }
    Some((channel, &data[4..4 + len]))
}

/// Writes a ChannelData message into `out` (replacing its contents). `pad` rounds the
/// length up to a multiple of 4, as required over stream transports.
pub fn write_channel_data(out: &mut Vec<u8>, channel: u16, payload: &[u8], pad: bool) {
    out.clear();
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    if pad {
        out.resize(out.len().next_multiple_of(4), 0);
    }
}

/// The STUN message type and length from a header, if it is a well-formed STUN header.
pub fn stun_header(data: &[u8]) -> Option<(u16, usize)> {
    if data.len() < HEADER_LEN {
        return None;
    }
    let ty = u16::from_be_bytes([data[0], data[1]]);
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let cookie = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if ty >> 14 != 0
        || cookie != MAGIC_COOKIE
        || !len.is_multiple_of(4)
        || data.len() < HEADER_LEN + len
    {
        return None;
    }
    Some((ty, len))
}

/// Decodes an XOR-PEER-ADDRESS / XOR-MAPPED-ADDRESS value (RFC 8489 §14.2).
pub fn decode_xor_address(value: &[u8], transaction_id: &[u8]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match value[1] {
        0x01 if value.len() == 8 => {
            let raw = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(raw)), port))
        }
        0x02 if value.len() == 20 && transaction_id.len() == 12 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(transaction_id);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = value[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn encode_xor_address(out: &mut Vec<u8>, addr: SocketAddr, transaction_id: &[u8; 12]) {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(transaction_id);
            for (b, k) in ip.octets().iter().zip(key) {
                out.push(b ^ k);
            }
        }
    }
}

/// A parsed Send indication.
#[derive(Debug, PartialEq, Eq)]
pub struct SendIndication<'a> {
    pub peer: SocketAddr,
    pub data: &'a [u8],
    /// DONT-FRAGMENT was present: the client asks for the DF bit on this datagram (§11.2).
    pub dont_fragment: bool,
}

/// Parses a Send indication without allocating. `None` when `data` is not one, or it
/// lacks XOR-PEER-ADDRESS or DATA (such indications are dropped, §10.2).
pub fn parse_send_indication(data: &[u8]) -> Option<SendIndication<'_>> {
    let (ty, len) = stun_header(data)?;
    if ty != SEND_INDICATION {
        return None;
    }
    let tid = &data[8..20];
    let mut peer = None;
    let mut payload = None;
    let mut dont_fragment = false;
    let mut at = HEADER_LEN;
    let end = HEADER_LEN + len;
    while at + 4 <= end {
        let attr = u16::from_be_bytes([data[at], data[at + 1]]);
        let alen = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let value = data.get(at + 4..at + 4 + alen)?;
        if at + 4 + alen > end {
            return None;
        }
        match attr {
            ATTR_XOR_PEER_ADDRESS if peer.is_none() => peer = decode_xor_address(value, tid),
            ATTR_DATA if payload.is_none() => payload = Some(value),
            ATTR_DONT_FRAGMENT => dont_fragment = true,
            _ => {}
        }
        at += 4 + alen.next_multiple_of(4);
    }
    Some(SendIndication {
        peer: peer?,
        data: payload?,
        dont_fragment,
    })
}

/// Writes a Data indication carrying `payload` from `peer` into `out`.
pub fn write_data_indication(
    out: &mut Vec<u8>,
    peer: SocketAddr,
    payload: &[u8],
    transaction_id: &[u8; 12],
) {
    out.clear();
    out.extend_from_slice(&DATA_INDICATION.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // length, patched below
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(transaction_id);
    let addr_len: u16 = if peer.is_ipv4() { 8 } else { 20 };
    out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
    out.extend_from_slice(&addr_len.to_be_bytes());
    encode_xor_address(out, peer, transaction_id);
    out.extend_from_slice(&ATTR_DATA.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
    let body = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&body.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trip() {
        let mut out = Vec::new();
        write_channel_data(&mut out, 0x4001, b"hello", true);
        assert_eq!(out.len(), 12);
        assert_eq!(classify(&out), Kind::ChannelData);
        assert_eq!(parse_channel_data(&out), Some((0x4001, &b"hello"[..])));
        write_channel_data(&mut out, 0x4001, b"hello", false);
        assert_eq!(out.len(), 9);
        assert_eq!(parse_channel_data(&out[..8]), None, "truncated");
        assert_eq!(
            parse_channel_data(&[0x3f, 0xff, 0, 0]),
            None,
            "not a channel"
        );
    }

    #[test]
    fn data_indication_parses_as_send_shape() {
        let tid = [7u8; 12];
        for peer in ["192.0.2.1:5000", "[2001:db8::1]:6000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut out = Vec::new();
            write_data_indication(&mut out, peer, b"abc", &tid);
            // A Send indication has the same layout with another type.
            out[0..2].copy_from_slice(&SEND_INDICATION.to_be_bytes());
            let ind = parse_send_indication(&out).unwrap();
            assert_eq!(ind.peer, peer);
            assert_eq!(ind.data, b"abc");
            assert!(!ind.dont_fragment);
        }
    }

    #[test]
    fn send_indication_dont_fragment_is_seen() {
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mut out = Vec::new();
        write_data_indication(&mut out, peer, b"abcd", &[7; 12]);
        out[0..2].copy_from_slice(&SEND_INDICATION.to_be_bytes());
        // DONT-FRAGMENT has no value (RFC 8656 §18.8): 4 bytes of header.
        out.extend_from_slice(&ATTR_DONT_FRAGMENT.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        let body = (out.len() - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&body.to_be_bytes());
        let ind = parse_send_indication(&out).unwrap();
        assert_eq!(
            (ind.peer, ind.data, ind.dont_fragment),
            (peer, &b"abcd"[..], true)
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = classify(&data);
            let _ = parse_channel_data(&data);
            let _ = parse_send_indication(&data);
            let _ = stun_header(&data);
            let _ = decode_xor_address(&data, &[0; 12]);
        }

        #[test]
        fn send_indication_fuzzed_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let mut msg = Vec::new();
            msg.extend_from_slice(&SEND_INDICATION.to_be_bytes());
            msg.extend_from_slice(&((body.len() / 4 * 4) as u16).to_be_bytes());
            msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            msg.extend_from_slice(&[1; 12]);
            msg.extend_from_slice(&body);
            let _ = parse_send_indication(&msg);
        }
    }
}
