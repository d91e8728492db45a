//! Prometheus metrics of the signalling service, served at `/metrics` in the text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric the signalling service exports. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_accepted: Counter,
    /// WebSocket upgrades refused, by reason (error code).
    pub connections_rejected: Family<CodeLabel, Counter>,
    /// Sessions alive now, connected or waiting to be resumed.
    pub sessions: Gauge,
    /// Sessions resumed after a lost connection.
    pub sessions_resumed: Counter,
    pub rooms: Gauge,
    pub participants: Gauge,
    pub calls_active: Gauge,
    /// Calls that ended, by reason.
    pub calls_ended: Family<ReasonLabel, Counter>,
    /// Client messages received, by type (`invalid` for undecodable ones).
    pub messages_in: Family<TypeLabel, Counter>,
    /// Messages sent to clients.
    pub messages_out: Counter,
    /// Errors sent to clients, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Connections closed because they could not keep up with their messages.
    pub slow_consumers: Counter,
}

impl Metrics {
    /// Registers every metric under the `huddle_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("huddle");
        r.register(
            "ws_connections",
            "WebSocket connections open",
            self.connections.clone(),
        );
        r.register(
            "ws_connections_accepted",
            "WebSocket connections accepted",
            self.connections_accepted.clone(),
        );
        r.register(
            "ws_connections_rejected",
            "WebSocket upgrades refused, by error code",
            self.connections_rejected.clone(),
        );
        r.register(
            "sessions",
            "Signalling sessions alive",
            self.sessions.clone(),
        );
        r.register(
            "sessions_resumed",
            "Sessions resumed after a lost connection",
            self.sessions_resumed.clone(),
        );
        r.register("rooms", "Rooms open", self.rooms.clone());
        r.register(
            "participants",
            "Participants in rooms",
            self.participants.clone(),
        );
        r.register(
            "calls_active",
            "One-to-one calls ringing or answered",
            self.calls_active.clone(),
        );
        r.register(
            "calls_ended",
            "One-to-one calls ended, by reason",
            self.calls_ended.clone(),
        );
        r.register(
            "signal_messages_in",
            "Client messages received, by type",
            self.messages_in.clone(),
        );
        r.register(
            "signal_messages_out",
            "Messages sent to clients",
            self.messages_out.clone(),
        );
        r.register(
            "signal_errors",
            "Errors sent to clients, by code",
            self.errors.clone(),
        );
        r.register(
            "slow_consumers",
            "Connections closed for not reading their messages",
            self.slow_consumers.clone(),
        );
    }
}
