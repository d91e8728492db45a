//! SFU-wide counters for Prometheus (`huddle_sfu_*`), updated lock-free by the driver
//! and registered into the binary's registry. Per-participant figures go out as
//! `SfuEvent::Stats` instead: one label per participant would explode cardinality.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The SFU's counters and gauges. Cloning shares them.
#[derive(Debug, Clone)]
pub struct SfuMetrics {
    /// Datagrams received (UDP, or frames of ICE-TCP connections).
    pub packets_in: Counter,
    /// Bytes of received datagrams.
    pub bytes_in: Counter,
    /// Datagrams sent (UDP, or frames of ICE-TCP connections).
    pub packets_out: Counter,
    /// Bytes of sent datagrams.
    pub bytes_out: Counter,
    /// Media frames written toward subscribers (one per subscriber).
    pub frames_forwarded: Counter,
    /// NACKs received from subscribers (answered from str0m's send buffer).
    pub nacks_received: Counter,
    /// NACKs sent to publishers.
    pub nacks_sent: Counter,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: Counter,
    /// PLI/FIR sent to publishers (after throttling, plus our own on gaps).
    pub keyframe_requests_sent: Counter,
    /// Keyframe requests swallowed by the per-track throttle.
    pub keyframe_requests_throttled: Counter,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP (RFC 7983 demultiplexing) or fail
    /// to parse as such.
    pub malformed_dropped: Counter,
    /// Well-formed datagrams no peer accepts (unknown ufrag, unknown source).
    pub unrouted_dropped: Counter,
    /// Datagrams dropped because their peer sent over `max_incoming_bitrate` or
    /// `max_incoming_packet_rate`.
    pub policed_dropped: Counter,
    /// Datagrams the WebRTC stack refused; the peer is disconnected.
    pub peer_errors: Counter,
    /// Datagrams not sent because the socket buffer was full.
    pub send_dropped: Counter,
    /// Datagrams received by one shard's socket for a peer of another shard and passed
    /// to it (the kernel spreads sources over the shards' sockets).
    pub datagrams_handed_off: Counter,
    /// Frames passed from their publisher's shard to another shard holding subscribers
    /// of their track (rooms spread over shards), one per shard.
    pub frames_handed_off: Counter,
    /// Messages between shards dropped because the receiving shard's queue was full.
    pub handoff_dropped: Counter,
    /// Stats/speaker events dropped because the consumer fell behind.
    pub events_dropped: Counter,
    /// Simulcast layer switches toward subscribers (up or down; starting on the first layer counts as one).
    pub layer_switches: Counter,
    /// ICE-TCP connections passed from the shard that accepted them to the one holding
    /// their peer.
    pub tcp_handed_off: Counter,
    /// ICE-TCP connections closed before they reached a peer: over the connection
    /// limit (of the shard, or of one address's connections not yet placed), closed by
    /// the client or no first frame in time, a bad frame, or no peer accepts the first
    /// one.
    pub tcp_rejected: Counter,
    /// Subscribers' send-side bandwidth estimates (bits per second), one observation
    /// per subscriber per stats interval: the distribution without a label per
    /// participant.
    pub subscriber_estimate: Histogram,
    /// Open rooms.
    pub rooms: Gauge,
    /// Participants with a media session.
    pub participants: Gauge,
    /// Published tracks.
    pub tracks: Gauge,
    /// Open ICE-TCP connections (RFC 6544), those that reached a peer and those
    /// waiting for their first frame.
    pub tcp_connections: Gauge,
    /// Connected participants by connection quality (`crate::quality`), as of the
    /// last stats interval; those not yet scored are in none.
    pub connection_quality: Family<QualityLabel, Gauge>,
}

/// The `quality` label of [`SfuMetrics::connection_quality`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QualityLabel {
    /// `excellent`, `good`, `poor` or `lost`.
    pub quality: &'static str,
}

impl Default for SfuMetrics {
    fn default() -> Self {
        Self {
            packets_in: Counter::default(),
            bytes_in: Counter::default(),
            packets_out: Counter::default(),
            bytes_out: Counter::default(),
            frames_forwarded: Counter::default(),
            nacks_received: Counter::default(),
            nacks_sent: Counter::default(),
            keyframe_requests_received: Counter::default(),
            keyframe_requests_sent: Counter::default(),
            keyframe_requests_throttled: Counter::default(),
            malformed_dropped: Counter::default(),
            unrouted_dropped: Counter::default(),
            policed_dropped: Counter::default(),
            peer_errors: Counter::default(),
            send_dropped: Counter::default(),
            datagrams_handed_off: Counter::default(),
            frames_handed_off: Counter::default(),
            handoff_dropped: Counter::default(),
            events_dropped: Counter::default(),
            layer_switches: Counter::default(),
            tcp_handed_off: Counter::default(),
            tcp_rejected: Counter::default(),
            // 64 kb/s to 32 Mb/s, doubling.
            subscriber_estimate: Histogram::new(exponential_buckets(64_000.0, 2.0, 10)),
            rooms: Gauge::default(),
            participants: Gauge::default(),
            tracks: Gauge::default(),
            tcp_connections: Gauge::default(),
            connection_quality: Family::default(),
        }
    }
}

impl SfuMetrics {
    /// Registers every metric under the `huddle_sfu` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("huddle_sfu");
        let counters: [(&str, &str, &Counter); 22] = [
            (
                "packets_in",
                "datagrams received (UDP, or ICE-TCP frames)",
                &self.packets_in,
            ),
            ("bytes_in", "bytes received", &self.bytes_in),
            (
                "packets_out",
                "datagrams sent (UDP, or ICE-TCP frames)",
                &self.packets_out,
            ),
            ("bytes_out", "bytes sent", &self.bytes_out),
            (
                "frames_forwarded",
                "media frames written toward subscribers",
                &self.frames_forwarded,
            ),
            (
                "nacks_received",
                "NACKs received from subscribers",
                &self.nacks_received,
            ),
            ("nacks_sent", "NACKs sent to publishers", &self.nacks_sent),
            (
                "keyframe_requests_received",
                "PLI/FIR received from subscribers",
                &self.keyframe_requests_received,
            ),
            (
                "keyframe_requests_sent",
                "PLI/FIR sent to publishers",
                &self.keyframe_requests_sent,
            ),
            (
                "keyframe_requests_throttled",
                "keyframe requests swallowed by the per-track throttle",
                &self.keyframe_requests_throttled,
            ),
            (
                "malformed_dropped",
                "malformed datagrams dropped",
                &self.malformed_dropped,
            ),
            (
                "unrouted_dropped",
                "datagrams no peer accepts",
                &self.unrouted_dropped,
            ),
            (
                "policed_dropped",
                "datagrams dropped for coming over a participant's incoming limits",
                &self.policed_dropped,
            ),
            (
                "peer_errors",
                "datagrams refused by the WebRTC stack",
                &self.peer_errors,
            ),
            (
                "send_dropped",
                "datagrams dropped on a full socket buffer",
                &self.send_dropped,
            ),
            (
                "datagrams_handed_off",
                "datagrams passed from the shard that received them to the one holding their peer",
                &self.datagrams_handed_off,
            ),
            (
                "frames_handed_off",
                "frames passed from their publisher's shard to a shard holding subscribers of their track",
                &self.frames_handed_off,
            ),
            (
                "handoff_dropped",
                "messages between shards dropped on a full queue",
                &self.handoff_dropped,
            ),
            (
                "events_dropped",
                "stats/speaker events dropped for a slow consumer",
                &self.events_dropped,
            ),
            (
                "layer_switches",
                "simulcast layer switches toward subscribers",
                &self.layer_switches,
            ),
            (
                "tcp_handed_off",
                "ICE-TCP connections passed to the shard holding their peer",
                &self.tcp_handed_off,
            ),
            (
                "tcp_rejected",
                "ICE-TCP connections closed before reaching a peer",
                &self.tcp_rejected,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register("rooms", "open rooms", self.rooms.clone());
        r.register(
            "participants",
            "participants with a media session",
            self.participants.clone(),
        );
        r.register("tracks", "published tracks", self.tracks.clone());
        r.register(
            "tcp_connections",
            "open ICE-TCP connections",
            self.tcp_connections.clone(),
        );
        r.register(
            "connection_quality_participants",
            "connected participants by connection quality",
            self.connection_quality.clone(),
        );
        r.register(
            "subscriber_bandwidth_estimate_bps",
            "send-side bandwidth estimates toward subscribers",
            self.subscriber_estimate.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes_every_metric() {
        let m = SfuMetrics::default();
        m.packets_in.inc_by(3);
        m.rooms.set(2);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("huddle_sfu_packets_in_total 3"), "{text}");
        assert!(text.contains("huddle_sfu_rooms 2"), "{text}");
        assert!(text.contains("huddle_sfu_keyframe_requests_throttled_total 0"));
        assert!(text.contains("huddle_sfu_layer_switches_total 0"), "{text}");
        m.subscriber_estimate.observe(1_000_000.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("huddle_sfu_subscriber_bandwidth_estimate_bps_count 1"),
            "{text}"
        );
    }
}
