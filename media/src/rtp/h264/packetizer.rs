//! H.264 packetizer, packetization-mode 1 (RFC 6184 §6.3): small NAL units are aggregated
//! into STAP-A, NAL units over the payload limit are fragmented into FU-A, the rest go as
//! Single NAL unit packets.

use super::{H264Error, nal_type, nal_unit_type, nal_units};
use crate::rtp::PayloadPacket;
use bytes::{BufMut, BytesMut};

/// Smallest maximum payload size accepted: room for the FU-A headers and some data.
const MIN_PAYLOAD: usize = 16;
/// Largest maximum payload size accepted: STAP-A sizes are 16 bits, and no UDP datagram
/// carries more.
const MAX_PAYLOAD: usize = 65_000;

/// Turns Annex-B access units into RTP payloads no larger than a maximum size.
#[derive(Debug)]
pub struct H264Packetizer {
    /// Largest RTP payload to produce (MTU minus IP, UDP, SRTP and RTP headers).
    max_payload: usize,
    /// Output buffer: every payload of one access unit is a slice of one allocation.
    buf: BytesMut,
    /// NAL units waiting to be aggregated: (start, end) offsets into the access unit.
    pending: Vec<(usize, usize)>,
}

impl H264Packetizer {
    /// A packetizer producing payloads of at most `max_payload` bytes (1200 is usual).
    pub fn new(max_payload: usize) -> Result<Self, H264Error> {
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&max_payload) {
            return Err(H264Error::BadMaxPayload(max_payload));
        }
        Ok(Self {
            max_payload,
            buf: BytesMut::new(),
            pending: Vec::with_capacity(8),
        })
    }

    /// Packetizes one access unit (Annex-B, all NAL units of one picture) captured at
    /// RTP `timestamp` (90 kHz) and appends its packets to `out`; the marker bit is set
    /// on the last one (RFC 6184 §5.1).
    pub fn packetize(
        &mut self,
        access_unit: &[u8],
        timestamp: u32,
        out: &mut Vec<PayloadPacket>,
    ) -> Result<(), H264Error> {
        let first_out = out.len();
        // Payload bytes are at most the access unit plus a few header bytes per packet.
        let units = nal_units(access_unit)?;
        self.buf
            .reserve(access_unit.len() + access_unit.len() / (self.max_payload - 2) * 2 + 64);
        let base = access_unit.as_ptr() as usize;
        self.pending.clear();
        let mut pending_size = 1; // STAP-A header byte
        for nal in units {
            // Types 0 and 24–31 would be misread as reserved, aggregation or fragment
            // packets by the receiver (RFC 6184 §5.2): refuse the access unit.
            let t = nal_unit_type(nal[0]);
            if !(1..=23).contains(&t) {
                out.truncate(first_out);
                self.buf.clear();
                return Err(H264Error::ReservedNalType(t));
            }
            let start = nal.as_ptr() as usize - base;
            let range = (start, start + nal.len());
            if nal.len() > self.max_payload {
                self.flush(access_unit, timestamp, out);
                pending_size = 1;
                self.fragment(nal, timestamp, out);
                continue;
            }
            if pending_size + 2 + nal.len() > self.max_payload {
                self.flush(access_unit, timestamp, out);
                pending_size = 1;
            }
            self.pending.push(range);
            pending_size += 2 + nal.len();
        }
        self.flush(access_unit, timestamp, out);
        match out[first_out..].last_mut() {
            Some(last) => last.marker = true,
            None => return Err(H264Error::NoStartCode),
        }
        Ok(())
    }

    /// Emits the pending NAL units: one as a Single NAL unit packet (RFC 6184 §5.6),
    /// several as one STAP-A (RFC 6184 §5.7.1).
    fn flush(&mut self, au: &[u8], timestamp: u32, out: &mut Vec<PayloadPacket>) {
        match self.pending.as_slice() {
            [] => return,
            [(s, e)] => self.buf.put_slice(&au[*s..*e]),
            units => {
                // F is the OR and NRI the maximum of the aggregated units' (§5.7).
                let (f, nri) = units.iter().fold((0u8, 0u8), |(f, nri), (s, _)| {
                    (f | (au[*s] & 0x80), nri.max(au[*s] & 0x60))
                });
                self.buf.put_u8(f | nri | nal_type::STAP_A);
                for (s, e) in units {
                    self.buf.put_u16((e - s) as u16);
                    self.buf.put_slice(&au[*s..*e]);
                }
            }
        }
        self.pending.clear();
        let payload = self.buf.split().freeze();
        out.push(PayloadPacket {
            timestamp,
            marker: false,
            payload,
        });
    }

    /// Splits one NAL unit into FU-A fragments of near-equal size (RFC 6184 §5.8).
    fn fragment(&mut self, nal: &[u8], timestamp: u32, out: &mut Vec<PayloadPacket>) {
        let header = nal[0];
        let body = &nal[1..];
        let room = self.max_payload - 2;
        let count = body.len().div_ceil(room);
        let (base, extra) = (body.len() / count, body.len() % count);
        let indicator = (header & 0xe0) | nal_type::FU_A;
        let mut offset = 0;
        for i in 0..count {
            // The first `extra` fragments carry one byte more.
            let len = base + usize::from(i < extra);
            let start_bit = if i == 0 { 0x80 } else { 0 };
            let end_bit = if i + 1 == count { 0x40 } else { 0 };
            self.buf.put_u8(indicator);
            self.buf.put_u8(start_bit | end_bit | nal_unit_type(header));
            self.buf.put_slice(&body[offset..offset + len]);
            offset += len;
            let payload = self.buf.split().freeze();
            out.push(PayloadPacket {
                timestamp,
                marker: false,
                payload,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(units: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for u in units {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(u);
        }
        v
    }

    #[test]
    fn small_units_are_aggregated_into_one_stap_a() {
        let sps = [0x67, 0x42, 0x00, 0x1f];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let idr = [0x65, 0x88, 0x84];
        let mut p = H264Packetizer::new(1200).unwrap();
        let mut out = Vec::new();
        p.packetize(&au(&[&sps, &pps, &idr]), 3000, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        let expect = [&[0x78u8, 0, 4][..], &sps, &[0, 4], &pps, &[0, 3], &idr].concat();
        assert_eq!(&out[0].payload[..], &expect[..]);
        assert!(out[0].marker);
        assert_eq!(out[0].timestamp, 3000);
    }

    #[test]
    fn a_single_unit_goes_as_single_nal_packet() {
        let mut p = H264Packetizer::new(1200).unwrap();
        let mut out = Vec::new();
        p.packetize(&au(&[&[0x41, 1, 2, 3]]), 0, &mut out).unwrap();
        assert_eq!(&out[0].payload[..], &[0x41, 1, 2, 3]);
    }

    #[test]
    fn large_units_are_fragmented_evenly_within_the_limit() {
        let mut nal = vec![0x65];
        nal.extend((0..2999).map(|i| (i % 251 + 1) as u8));
        let mut p = H264Packetizer::new(1000).unwrap();
        let mut out = Vec::new();
        p.packetize(&au(&[&nal]), 0, &mut out).unwrap();
        // 2999 body bytes in 998-byte rooms: 4 fragments of 750/750/750/749.
        let lens: Vec<usize> = out.iter().map(|p| p.payload.len()).collect();
        assert_eq!(lens, [752, 752, 752, 751]);
        assert_eq!(out[0].payload[..2], [0x7c, 0x85]);
        assert_eq!(out[1].payload[..2], [0x7c, 0x05]);
        assert_eq!(out[3].payload[..2], [0x7c, 0x45]);
        let markers: Vec<bool> = out.iter().map(|p| p.marker).collect();
        assert_eq!(markers, [false, false, false, true]);
    }

    #[test]
    fn errors_on_bad_input() {
        let mut out = Vec::new();
        assert_eq!(
            H264Packetizer::new(8).unwrap_err(),
            H264Error::BadMaxPayload(8)
        );
        let mut p = H264Packetizer::new(100).unwrap();
        assert_eq!(
            p.packetize(&[1, 2, 3], 0, &mut out),
            Err(H264Error::NoStartCode)
        );
        assert_eq!(
            p.packetize(&[0, 0, 1, 0, 0], 0, &mut out),
            Err(H264Error::NoStartCode)
        );
        assert!(out.is_empty());
        // A NAL unit of type 28 would be read as a FU-A: nothing of the unit is sent.
        let au = [&[0, 0, 1, 0x41][..], &[0x55; 300], &[0, 0, 1, 0x7c, 1]].concat();
        assert_eq!(
            p.packetize(&au, 0, &mut out),
            Err(H264Error::ReservedNalType(28))
        );
        assert!(out.is_empty());
        p.packetize(&[0, 0, 1, 0x41, 1], 0, &mut out).unwrap();
        assert_eq!(&out[0].payload[..], &[0x41, 1]);
    }
}
