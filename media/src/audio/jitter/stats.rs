//! Jitter-buffer statistics, named after WebRTC `getStats` (RTCInboundRtpStreamStats) fields
//! where one exists, serialisable as a snapshot.

use serde::{Deserialize, Serialize};

/// Cumulative counters since creation plus the current and target delay.
///
/// Sample counts are per channel (a stereo sample pair counts once), as in `getStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JitterStats {
    /// Sum over emitted decoded samples of the time each spent buffered, in seconds.
    pub jitter_buffer_delay: f64,
    /// Sum over the same samples of the target delay when each was emitted, in seconds.
    pub jitter_buffer_target_delay: f64,
    /// Decoded samples emitted (the count `jitter_buffer_delay` is summed over).
    pub jitter_buffer_emitted_count: u64,
    /// Samples played out since playout started, concealed ones included.
    pub total_samples_received: u64,
    /// Samples produced by loss concealment (expand) instead of decoded audio.
    pub concealed_samples: u64,
    /// Concealed samples that were silence (after the fade on a long gap).
    pub silent_concealed_samples: u64,
    /// Times concealment started after decoded audio.
    pub concealment_events: u64,
    /// Samples added by pre-emptive expansion to raise the delay.
    pub inserted_samples_for_deceleration: u64,
    /// Samples removed by acceleration (time compression or dropped silence).
    pub removed_samples_for_acceleration: u64,
    /// Samples of comfort noise played during discontinuous transmission (not loss).
    pub comfort_noise_samples: u64,
    /// Packets accepted into the buffer.
    pub packets_received: u64,
    /// Packets dropped by the buffer: late, evicted for space, flushed on a resync, or
    /// undecodable.
    pub packets_discarded: u64,
    /// Of `packets_discarded`, those that arrived after their playout time.
    pub late_packets: u64,
    /// Copies of packets already held or played.
    pub duplicate_packets: u64,
    /// Sequence numbers that reached playout without a packet (concealed, not recovered).
    pub packets_lost: u64,
    /// Lost packets recovered from the next packet's in-band FEC.
    pub fec_recovered_packets: u64,
    /// Accelerate operations (each removes a pitch period or a stretch of silence).
    pub accelerate_operations: u64,
    /// Pre-emptive expand operations (each repeats a pitch period or inserts silence).
    pub preemptive_expand_operations: u64,
    /// Flushes after a jump in sequence number or timestamp.
    pub resyncs: u64,
    /// Audio held now (packets and decoded samples not yet played), in milliseconds.
    pub current_delay_ms: f64,
    /// The delay the buffer is steering towards, in milliseconds.
    pub target_delay_ms: f64,
}

impl JitterStats {
    /// Mean time a decoded sample spent in the buffer, in milliseconds.
    pub fn mean_delay_ms(&self) -> f64 {
        if self.jitter_buffer_emitted_count == 0 {
            0.0
        } else {
            self.jitter_buffer_delay * 1000.0 / self.jitter_buffer_emitted_count as f64
        }
    }

    /// Share of played samples that were concealed, in percent.
    pub fn concealed_percent(&self) -> f64 {
        if self.total_samples_received == 0 {
            0.0
        } else {
            self.concealed_samples as f64 * 100.0 / self.total_samples_received as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_getstats_names() {
        let s = JitterStats {
            jitter_buffer_delay: 1.5,
            concealed_samples: 3,
            ..Default::default()
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["jitterBufferDelay"], 1.5);
        assert_eq!(json["concealedSamples"], 3);
        assert!(json.get("removedSamplesForAcceleration").is_some());
        let back: JitterStats = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn ratios_are_zero_before_playout() {
        let s = JitterStats::default();
        assert_eq!(s.mean_delay_ms(), 0.0);
        assert_eq!(s.concealed_percent(), 0.0);
    }
}
