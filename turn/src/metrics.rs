//! Prometheus metrics of the TURN server, read from the core at scrape time.

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::driver::Shared;
use crate::server::Drop;

/// Exports allocations, permissions, channels, relayed packets and bytes each way, auth
/// failures and drops by reason under `huddle_turn_*`.
#[derive(Debug)]
pub struct TurnCollector(pub(crate) Vec<Weak<Shared>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("turn::Shared")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: usize) -> std::fmt::Result {
    ConstGauge::new(v as i64).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for TurnCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let mut stats = crate::server::Stats::default();
        let (mut allocations, mut permissions, mut channels, mut send_drops, mut streams_refused) =
            (0, 0, 0, 0, 0);
        for shard in self.0.iter().filter_map(Weak::upgrade) {
            let core = shard.core.lock();
            let s = core.stats();
            stats.packets_to_peers += s.packets_to_peers;
            stats.bytes_to_peers += s.bytes_to_peers;
            stats.packets_to_clients += s.packets_to_clients;
            stats.bytes_to_clients += s.bytes_to_clients;
            stats.auth_failures += s.auth_failures;
            stats.allocations_created += s.allocations_created;
            for (why, n) in &s.drops {
                *stats.drops.entry(*why).or_default() += n;
            }
            allocations += core.allocation_count();
            permissions += core.permission_count();
            channels += core.channel_count();
            send_drops += shard.send_drops.load(std::sync::atomic::Ordering::Relaxed);
            streams_refused += shard
                .streams_refused
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        gauge(
            &mut e,
            "huddle_turn_allocations",
            "TURN allocations",
            allocations,
        )?;
        gauge(
            &mut e,
            "huddle_turn_permissions",
            "TURN permissions",
            permissions,
        )?;
        gauge(
            &mut e,
            "huddle_turn_channels",
            "TURN channel bindings",
            channels,
        )?;
        counter(
            &mut e,
            "huddle_turn_allocations_created",
            "TURN allocations created",
            stats.allocations_created,
        )?;
        counter(
            &mut e,
            "huddle_turn_packets_to_peers",
            "Datagrams relayed from clients to peers",
            stats.packets_to_peers,
        )?;
        counter(
            &mut e,
            "huddle_turn_bytes_to_peers",
            "Payload bytes relayed from clients to peers",
            stats.bytes_to_peers,
        )?;
        counter(
            &mut e,
            "huddle_turn_packets_to_clients",
            "Datagrams relayed from peers to clients",
            stats.packets_to_clients,
        )?;
        counter(
            &mut e,
            "huddle_turn_bytes_to_clients",
            "Payload bytes relayed from peers to clients",
            stats.bytes_to_clients,
        )?;
        counter(
            &mut e,
            "huddle_turn_auth_failures",
            "Failed TURN authentications",
            stats.auth_failures,
        )?;
        counter(
            &mut e,
            "huddle_turn_send_drops",
            "Datagrams dropped when sent: a full socket buffer, or too large for DF",
            send_drops,
        )?;
        counter(
            &mut e,
            "huddle_turn_stream_connections_refused",
            "TCP/TLS connections closed at once for exceeding the connection caps",
            streams_refused,
        )?;
        let mut family = e.encode_descriptor(
            "huddle_turn_drops",
            "Packets dropped, by reason",
            None,
            MetricType::Counter,
        )?;
        for why in Drop::ALL {
            let labels = [("reason", why.as_str())];
            let v = stats.drops.get(&why).copied().unwrap_or(0);
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl crate::driver::TurnService {
    /// A collector to register in the process's Prometheus registry.
    pub fn collector(&self) -> TurnCollector {
        TurnCollector(
            self.shards()
                .iter()
                .map(std::sync::Arc::downgrade)
                .collect(),
        )
    }
}
