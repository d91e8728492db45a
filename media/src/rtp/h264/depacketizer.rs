//! H.264 depacketizer, packetization-mode 1 (RFC 6184 §6.3): reassembles FU-A, unpacks
//! STAP-A and outputs Annex-B access units, dropping (and reporting) any access unit
//! with a missing or malformed packet rather than passing a damaged one on.

use super::{H264Error, START_CODE, StapA, inspect_payload, nal_type, nal_unit_type};
use crate::rtp::SeqUnwrapper;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;

/// Limits and options of an [`H264Depacketizer`].
#[derive(Debug, Clone)]
pub struct DepacketizerConfig {
    /// Largest access unit accepted, in bytes (Annex-B); bounds memory per stream.
    pub max_access_unit_bytes: usize,
    /// Largest SPS or PPS cached for prepending.
    pub max_parameter_set_bytes: usize,
    /// Prepend the last SPS and PPS seen before an IDR access unit that lacks them, so
    /// that a decoder joining at that IDR can start (receivers of streams that send
    /// parameter sets only once, or out of band, need this).
    pub prepend_parameter_sets: bool,
}

impl Default for DepacketizerConfig {
    fn default() -> Self {
        Self {
            max_access_unit_bytes: 4 << 20,
            max_parameter_set_bytes: 1024,
            prepend_parameter_sets: true,
        }
    }
}

/// One complete access unit (a picture), as an Annex-B byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// RTP timestamp (90 kHz).
    pub timestamp: u32,
    /// NAL units, each after a 4-byte start code.
    pub data: Bytes,
    /// Contains an IDR slice: a keyframe.
    pub keyframe: bool,
    /// Contains both an SPS and a PPS (possibly prepended from the cache): a keyframe
    /// with these can start a decoder.
    pub has_parameter_sets: bool,
    /// The SPS and PPS were prepended from the cache.
    pub parameter_sets_prepended: bool,
}

/// Why an access unit was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// A sequence-number gap: some of its packets never arrived (or arrived too late).
    MissingPackets,
    /// One of its packets was malformed.
    Malformed(H264Error),
}

/// What the depacketizer produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A complete access unit.
    AccessUnit(AccessUnit),
    /// An access unit that could not be completed; the decoder should expect a
    /// reference gap and a keyframe request is usually due.
    Dropped {
        /// Its RTP timestamp.
        timestamp: u32,
        /// Why.
        reason: DropReason,
    },
}

/// Counters of an [`H264Depacketizer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Complete access units output.
    pub access_units: u64,
    /// Of those, keyframes (IDR).
    pub keyframes: u64,
    /// Access units dropped for missing packets.
    pub dropped_missing: u64,
    /// Access units dropped for a malformed packet.
    pub dropped_malformed: u64,
    /// IDR access units that got the cached SPS/PPS prepended.
    pub parameter_sets_prepended: u64,
    /// Packets rejected because they were older than one already pushed.
    pub out_of_order: u64,
}

/// Most outputs kept when the caller does not poll (with the access unit limit, this
/// bounds memory); older ones are discarded.
const MAX_QUEUED_OUTPUTS: usize = 16;

/// State of the access unit being assembled.
#[derive(Debug, Clone)]
struct Assembly {
    /// Its RTP timestamp.
    timestamp: u32,
    /// Set once a packet is missing or malformed; the rest of the unit is discarded.
    broken: Option<DropReason>,
    /// NAL type of the fragmented NAL unit still open (FU-A started, not ended).
    open_fu: Option<u8>,
    /// Offset in the buffer where the open fragmented NAL unit begins.
    open_fu_at: usize,
    /// NAL unit types seen.
    idr: bool,
    sps: bool,
    pps: bool,
}

impl Assembly {
    /// An access unit with nothing received yet.
    fn new(timestamp: u32) -> Self {
        Self {
            timestamp,
            broken: None,
            open_fu: None,
            open_fu_at: 0,
            idr: false,
            sps: false,
            pps: false,
        }
    }
}

/// Reassembles access units from RTP payloads pushed in sequence order (after a
/// jitter buffer, or straight from the network when reordering is rare).
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    /// Limits and options.
    config: DepacketizerConfig,
    /// Sequence number unwrapping.
    seq: SeqUnwrapper,
    /// Last sequence number pushed.
    last_seq: Option<u64>,
    /// Annex-B bytes of the access unit being assembled; reused across units.
    buf: BytesMut,
    /// The access unit being assembled.
    current: Option<Assembly>,
    /// Last SPS and PPS seen (one of each; enough for the single-layer streams WebRTC
    /// sends, which use parameter set id 0).
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// Outputs not yet polled.
    outputs: VecDeque<Output>,
    /// Counters.
    stats: DepacketizerStats,
}

impl H264Depacketizer {
    /// A depacketizer with the given limits.
    pub fn new(config: DepacketizerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &DepacketizerStats {
        &self.stats
    }

    /// Next access unit or drop report, in timestamp order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Pushes one RTP payload with its header fields. An error means this packet was
    /// rejected; the access unit it belonged to is then reported as dropped.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), H264Error> {
        let seq = self.seq.unwrap(seq);
        if self.last_seq.is_some_and(|last| seq <= last) {
            self.stats.out_of_order += 1;
            return Err(H264Error::OutOfOrder);
        }
        // The first packet of a stream has an unknown predecessor: treat it like a gap.
        let gap = self.last_seq.is_none_or(|last| seq != last + 1);
        self.last_seq = Some(seq);
        if self
            .current
            .as_ref()
            .is_some_and(|a| a.timestamp != timestamp)
        {
            // A new timestamp without the marker: the old unit is complete only when no
            // packet is missing between them (some senders omit the marker).
            self.finish(!gap);
        }
        let fresh = self.current.is_none();
        if fresh {
            self.buf.clear();
        }
        let assembly = self.current.get_or_insert_with(|| Assembly::new(timestamp));
        // After a gap, a fresh unit is intact only if this packet provably opens it
        // (an AUD or SPS first); otherwise its first packets may be what was lost.
        if gap && assembly.broken.is_none() {
            let opens = fresh && inspect_payload(payload).is_ok_and(|i| i.starts_access_unit);
            if !opens {
                assembly.broken = Some(DropReason::MissingPackets);
            }
        }
        let result = if assembly.broken.is_some() {
            // Still validate, so the caller learns of malformed input.
            inspect_payload(payload).map(|_| ())
        } else {
            let r = append_payload(
                &mut self.buf,
                assembly,
                payload,
                &self.config,
                &mut self.sps,
                &mut self.pps,
            );
            if let Err(e) = &r {
                assembly.broken = Some(DropReason::Malformed(e.clone()));
            }
            r
        };
        if marker {
            self.finish(true);
        }
        result
    }

    /// Depacketizes one whole access unit from its payloads in order, e.g. a frame
    /// that the video frame buffer found complete.
    pub fn depacketize_frame<'a>(
        &mut self,
        timestamp: u32,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<AccessUnit, H264Error> {
        let mut assembly = Assembly::new(timestamp);
        self.buf.clear();
        for payload in payloads {
            append_payload(
                &mut self.buf,
                &mut assembly,
                payload,
                &self.config,
                &mut self.sps,
                &mut self.pps,
            )?;
        }
        if assembly.open_fu.is_some() {
            return Err(H264Error::FuUnterminated);
        }
        if self.buf.is_empty() {
            return Err(H264Error::Empty);
        }
        let au = self.build(&assembly);
        self.count(&au);
        Ok(au)
    }

    /// Closes the unit being assembled: outputs it whole, or reports it dropped.
    fn finish(&mut self, complete: bool) {
        let Some(assembly) = self.current.take() else {
            return;
        };
        let reason = match (&assembly.broken, assembly.open_fu, complete) {
            (Some(reason), _, _) => Some(reason.clone()),
            (None, Some(_), true) => Some(DropReason::Malformed(H264Error::FuUnterminated)),
            (None, _, false) => Some(DropReason::MissingPackets),
            (None, None, true) => None,
        };
        let output = match reason {
            Some(reason) => {
                match reason {
                    DropReason::MissingPackets => self.stats.dropped_missing += 1,
                    DropReason::Malformed(_) => self.stats.dropped_malformed += 1,
                }
                Output::Dropped {
                    timestamp: assembly.timestamp,
                    reason,
                }
            }
            None => {
                let au = self.build(&assembly);
                self.count(&au);
                Output::AccessUnit(au)
            }
        };
        if self.outputs.len() == MAX_QUEUED_OUTPUTS {
            self.outputs.pop_front();
        }
        self.outputs.push_back(output);
    }

    fn count(&mut self, au: &AccessUnit) {
        self.stats.access_units += 1;
        self.stats.keyframes += u64::from(au.keyframe);
        self.stats.parameter_sets_prepended += u64::from(au.parameter_sets_prepended);
    }

    /// Takes the assembled bytes as an access unit, prepending cached parameter sets
    /// to an IDR that lacks them when configured to.
    fn build(&mut self, a: &Assembly) -> AccessUnit {
        let mut has_parameter_sets = a.sps && a.pps;
        let mut prepended = false;
        if a.idr
            && !has_parameter_sets
            && self.config.prepend_parameter_sets
            && let (Some(sps), Some(pps)) = (&self.sps, &self.pps)
        {
            let mut with = BytesMut::with_capacity(8 + sps.len() + pps.len() + self.buf.len());
            for set in [sps, pps] {
                with.put_slice(&START_CODE);
                with.put_slice(set);
            }
            with.put_slice(&self.buf);
            self.buf.clear();
            self.buf.unsplit(with);
            has_parameter_sets = true;
            prepended = true;
        }
        AccessUnit {
            timestamp: a.timestamp,
            data: self.buf.split().freeze(),
            keyframe: a.idr,
            has_parameter_sets,
            parameter_sets_prepended: prepended,
        }
    }
}

/// Appends one RTP payload's NAL units to `buf` (RFC 6184 §5.6–§5.8).
fn append_payload(
    buf: &mut BytesMut,
    a: &mut Assembly,
    payload: &[u8],
    config: &DepacketizerConfig,
    sps: &mut Option<Bytes>,
    pps: &mut Option<Bytes>,
) -> Result<(), H264Error> {
    let (&header, body) = payload.split_first().ok_or(H264Error::Empty)?;
    let mut put_nal = |buf: &mut BytesMut, a: &mut Assembly, nal: &[u8]| {
        if buf.len() + START_CODE.len() + nal.len() > config.max_access_unit_bytes {
            return Err(H264Error::TooLarge(config.max_access_unit_bytes));
        }
        buf.put_slice(&START_CODE);
        buf.put_slice(nal);
        note_nal(a, nal, config, sps, pps);
        Ok(())
    };
    match nal_unit_type(header) {
        1..=23 => {
            if a.open_fu.is_some() {
                return Err(H264Error::FuUnterminated);
            }
            put_nal(buf, a, payload)
        }
        nal_type::STAP_A => {
            if a.open_fu.is_some() {
                return Err(H264Error::FuUnterminated);
            }
            let mut count = 0;
            for nal in StapA::new(body) {
                put_nal(buf, a, nal?)?;
                count += 1;
            }
            // A STAP-A aggregates at least one unit (RFC 6184 §5.7.1).
            if count == 0 {
                Err(H264Error::MalformedStapA)
            } else {
                Ok(())
            }
        }
        nal_type::FU_A => {
            let [fu_header, data @ ..] = body else {
                return Err(H264Error::FuTooShort);
            };
            if data.is_empty() {
                return Err(H264Error::FuTooShort);
            }
            let (start, end, t) = (
                fu_header & 0x80 != 0,
                fu_header & 0x40 != 0,
                nal_unit_type(*fu_header),
            );
            if !(1..=23).contains(&t) {
                return Err(H264Error::NestedNalType(t));
            }
            match (start, end, a.open_fu) {
                (true, true, _) => return Err(H264Error::FuStartAndEnd),
                (true, false, Some(_)) => return Err(H264Error::FuRestarted),
                (false, _, None) => return Err(H264Error::FuWithoutStart),
                (false, _, Some(open)) if open != t => return Err(H264Error::FuTypeChanged),
                _ => {}
            }
            if buf.len() + START_CODE.len() + 1 + data.len() > config.max_access_unit_bytes {
                return Err(H264Error::TooLarge(config.max_access_unit_bytes));
            }
            if start {
                // The NAL header is rebuilt from the indicator's F and NRI and the
                // FU header's type (RFC 6184 §5.8).
                let nal_header = (header & 0xe0) | t;
                buf.put_slice(&START_CODE);
                a.open_fu_at = buf.len();
                buf.put_u8(nal_header);
                note_nal(a, &[nal_header], config, &mut None, &mut None);
                a.open_fu = Some(t);
            }
            buf.put_slice(data);
            if end {
                a.open_fu = None;
                let nal = &buf[a.open_fu_at..];
                let slot = match t {
                    nal_type::SPS => Some(sps),
                    nal_type::PPS => Some(pps),
                    _ => None,
                };
                if let Some(slot) = slot.filter(|_| nal.len() <= config.max_parameter_set_bytes) {
                    *slot = Some(Bytes::copy_from_slice(nal));
                }
            }
            Ok(())
        }
        t @ (nal_type::STAP_B | nal_type::MTAP16 | nal_type::MTAP24 | nal_type::FU_B) => {
            Err(H264Error::NotInMode1(t))
        }
        t => Err(H264Error::ReservedNalType(t)),
    }
}

/// Records the NAL unit's type and caches parameter sets (a copy: they are small and rare).
fn note_nal(
    a: &mut Assembly,
    nal: &[u8],
    config: &DepacketizerConfig,
    sps: &mut Option<Bytes>,
    pps: &mut Option<Bytes>,
) {
    let Some(&header) = nal.first() else { return };
    let t = nal_unit_type(header);
    match t {
        nal_type::IDR => a.idr = true,
        nal_type::SPS => a.sps = true,
        nal_type::PPS => a.pps = true,
        _ => return,
    }
    // Fragmented parameter sets are cached when their last fragment arrives.
    if nal.len() > 1 && nal.len() <= config.max_parameter_set_bytes {
        let slot = if t == nal_type::SPS {
            sps
        } else if t == nal_type::PPS {
            pps
        } else {
            return;
        };
        *slot = Some(Bytes::copy_from_slice(nal));
    }
}

#[cfg(test)]
#[path = "depacketizer_tests.rs"]
mod tests;
