//! The effective configuration: defaults, then the TOML file, then `HUDDLE_*` environment
//! variables, then flags; then development defaults for `--dev`, then validation. Every
//! error names the key it is about.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use huddle_signal::config::{
    AuthConfig, CallsConfig, ChatConfig, HttpConfig, IceConfig, RoomsConfig, Secret, SignalConfig,
    StoreConfig,
};
use serde::{Deserialize, Serialize};

use crate::cli::LogFormat;

/// Development secrets, documented in README and docs/deployment.md. Never for production.
pub const DEV_TOKEN_SECRET: &str = "huddle-dev-token-secret-not-for-production";
pub const DEV_API_SECRET: &str = "huddle-dev-api-secret";
pub const DEV_TURN_SECRET: &str = "huddle-dev-turn-secret";

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `huddle_signal=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest wait for connections to close after clients were told to go.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Delay clients are asked to wait before reconnecting.
    #[serde(with = "humantime_serde")]
    pub reconnect_after: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
            reconnect_after: Duration::from_secs(2),
        }
    }
}

/// `[sfu]`: the selective forwarding unit (media for rooms).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuSection {
    /// Run the SFU inside `huddle serve`.
    pub enabled: bool,
    /// The one UDP socket all media uses (port 0: any free port).
    pub listen: SocketAddr,
    /// ICE over TCP (RFC 6544 passive candidates) for clients whose network blocks
    /// UDP; advertised below the UDP candidates, so it is used only when UDP fails.
    pub ice_tcp: bool,
    /// Where ICE over TCP listens; by default `listen`'s address with port 7881 (port
    /// 0, any free port, when `listen`'s port is 0).
    pub tcp_listen: Option<SocketAddr>,
    /// Addresses advertised to clients as ICE candidates (with the bound port), besides
    /// the listen address or, when it is a wildcard, the node's interface addresses;
    /// behind NAT, the public address.
    pub public_ips: Vec<IpAddr>,
    /// Participants with media in one room.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: usize,
    /// Members of one room who may publish (the others only receive); a track of a
    /// member beyond it is refused (`media_track_refused`). 0: every member may.
    pub max_publishers_per_room: usize,
    /// Rooms with media at once.
    pub max_rooms: usize,
    /// A client whose ICE has not connected this long after joining is dropped.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Estimate each subscriber's bandwidth (transport-wide congestion control) and pick
    /// simulcast layers by it; off: every subscriber is assumed to have
    /// `max_subscriber_bitrate`.
    pub bandwidth_estimation: bool,
    /// Most the SFU sends one subscriber, in bits per second.
    pub max_subscriber_bitrate: u64,
    /// Most one publisher may send, in bits per second (REMB toward it); 0: no cap.
    pub max_publisher_bitrate: u64,
    /// Where each subscriber's bandwidth estimate starts, in bits per second (what the
    /// first simulcast layers are chosen by, until the estimator has measured).
    pub initial_bitrate: u64,
    /// Most one participant may send the SFU, in bits per second: the excess is dropped
    /// unread (a flood is not forwarded); 0: no limit. Unlike `max_publisher_bitrate`
    /// it is enforced, not asked for.
    pub max_incoming_bitrate: u64,
    /// Likewise in datagrams per second (STUN not counted); 0: no limit.
    pub max_incoming_packet_rate: u64,
    /// Forward video of only the N most recent speakers to each participant (audio of
    /// everyone); 0: everyone's video.
    pub last_n: usize,
    /// SFU driver threads, each with its own socket on `listen` (SO_REUSEPORT) and its
    /// own sessions; 0: one per core.
    pub shards: usize,
    /// Spread a room over the shards once this many of its members are on its home
    /// shard (later members fill other shards as many at a time; frames cross
    /// between shards); 0: a room stays on one shard.
    pub spread_rooms_above: usize,
    /// Offer redundant audio (RFC 2198 RED, before Opus): peers that accept it send and
    /// get each audio frame with the previous one inside, so a single lost packet is
    /// rebuilt without a retransmission, at about the audio's bitrate again.
    pub audio_red: bool,
}

impl Default for SfuSection {
    fn default() -> Self {
        let d = huddle_sfu::SfuConfig::default();
        Self {
            enabled: true,
            listen: d.bind,
            ice_tcp: true,
            tcp_listen: None,
            public_ips: d.public_ips,
            max_participants_per_room: d.router.max_participants_per_room,
            max_tracks_per_participant: d.router.max_tracks_per_participant,
            max_publishers_per_room: d.router.max_publishers_per_room,
            max_rooms: d.router.max_rooms,
            connect_timeout: d.connect_timeout,
            bandwidth_estimation: d.bandwidth.estimate,
            max_subscriber_bitrate: d.bandwidth.max_subscriber_bitrate,
            max_publisher_bitrate: d.bandwidth.max_publisher_bitrate,
            initial_bitrate: d.bandwidth.initial_bitrate,
            max_incoming_bitrate: d.max_incoming_bitrate,
            max_incoming_packet_rate: d.max_incoming_packet_rate,
            last_n: d.router.last_n.unwrap_or(0),
            shards: d.shards,
            spread_rooms_above: d.spread_rooms_above,
            audio_red: d.audio_red,
        }
    }
}

impl SfuSection {
    pub fn to_sfu_config(&self) -> huddle_sfu::SfuConfig {
        let default_tcp = || {
            let port = if self.listen.port() == 0 {
                0
            } else {
                huddle_sfu::DEFAULT_TCP_PORT
            };
            SocketAddr::new(self.listen.ip(), port)
        };
        let mut c = huddle_sfu::SfuConfig {
            bind: self.listen,
            tcp_bind: self
                .ice_tcp
                .then(|| self.tcp_listen.unwrap_or_else(default_tcp)),
            public_ips: self.public_ips.clone(),
            connect_timeout: self.connect_timeout,
            max_incoming_bitrate: self.max_incoming_bitrate,
            max_incoming_packet_rate: self.max_incoming_packet_rate,
            shards: self.shards,
            spread_rooms_above: self.spread_rooms_above,
            audio_red: self.audio_red,
            ..Default::default()
        };
        c.router.max_participants_per_room = self.max_participants_per_room;
        c.router.max_tracks_per_participant = self.max_tracks_per_participant;
        c.router.max_publishers_per_room = self.max_publishers_per_room;
        c.router.max_rooms = self.max_rooms;
        c.router.last_n = (self.last_n > 0).then_some(self.last_n);
        c.bandwidth.estimate = self.bandwidth_estimation;
        c.bandwidth.max_subscriber_bitrate = self.max_subscriber_bitrate;
        c.bandwidth.max_publisher_bitrate = self.max_publisher_bitrate;
        // Above the subscriber cap it would only be capped.
        c.bandwidth.initial_bitrate = self.initial_bitrate.min(self.max_subscriber_bitrate);
        if c.public_ips.is_empty() && !self.listen.ip().is_unspecified() {
            c.public_ips = vec![self.listen.ip()];
        }
        c
    }
}

/// `[turn]`: the STUN/TURN server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Run the TURN server inside `huddle serve`.
    pub enabled: bool,
    /// UDP listeners for STUN/TURN.
    pub listen_udp: Vec<SocketAddr>,
    /// TCP listeners for STUN/TURN.
    pub listen_tcp: Vec<SocketAddr>,
    /// TLS listeners (used when tls_cert and tls_key are set).
    pub listen_tls: Vec<SocketAddr>,
    /// PEM certificate chain for TURN over TLS.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for TURN over TLS.
    pub tls_key: Option<std::path::PathBuf>,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Public address advertised for relays (needed when relay_ip is unspecified or private).
    pub external_ip: Option<IpAddr>,
    /// IPv6 relay address; absent means no IPv6 relaying.
    pub relay_ip_v6: Option<IpAddr>,
    /// Relay port range, inclusive.
    pub min_port: u16,
    pub max_port: u16,
    pub realm: String,
    /// Static users, `name:password`.
    pub users: Vec<Secret>,
    /// TURN REST shared secret; defaults to ice.turn_secret in `huddle serve`.
    pub auth_secret: Option<Secret>,
    /// Allow relaying to loopback peers (tests, single-machine setups).
    pub allow_loopback_peers: bool,
    /// Peer networks always allowed (CIDR), e.g. an internal media server.
    pub allowed_peers: Vec<String>,
    /// Peer networks always denied (CIDR).
    pub denied_peers: Vec<String>,
    /// Allocations in total.
    pub max_allocations: usize,
    /// Allocations per username.
    pub user_quota: usize,
    /// Failed authentications per client IP per minute before its requests are dropped.
    pub auth_failures_per_minute: u32,
    /// Relayed bytes per second per username, both directions (0: no limit).
    pub user_bandwidth: u64,
    /// TCP and TLS client connections at once.
    pub max_stream_connections: usize,
    /// TCP and TLS client connections at once from one IP address.
    pub max_stream_connections_per_ip: usize,
    /// `huddle turn` only: serve /metrics and /healthz here.
    pub metrics_listen: Option<SocketAddr>,
    /// Relay threads, one shard each (0: one per core).
    pub threads: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        let any = SocketAddr::from(([0, 0, 0, 0], 3478));
        Self {
            enabled: true,
            listen_udp: vec![any],
            listen_tcp: vec![any],
            listen_tls: vec![SocketAddr::from(([0, 0, 0, 0], 5349))],
            tls_cert: None,
            tls_key: None,
            relay_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            external_ip: None,
            relay_ip_v6: None,
            min_port: 49152,
            max_port: 65535,
            realm: "huddle".into(),
            users: Vec::new(),
            auth_secret: None,
            allow_loopback_peers: false,
            allowed_peers: Vec::new(),
            denied_peers: Vec::new(),
            max_allocations: 100_000,
            user_quota: 100,
            auth_failures_per_minute: 30,
            user_bandwidth: 0,
            max_stream_connections: 10_000,
            max_stream_connections_per_ip: 100,
            metrics_listen: None,
            threads: 0,
        }
    }
}

/// What the loaded configuration will be used for; each checks what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `huddle serve`: signalling (and TURN when enabled).
    Serve,
    /// `huddle turn`: TURN alone.
    Turn,
    /// `huddle token`: just the token secret.
    Token,
    /// `huddle admin`: a client of the admin API; nothing is checked (the command needs
    /// only the API secret, and says so).
    Admin,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub signal: SignalConfig,
    pub rooms: RoomsConfig,
    pub calls: CallsConfig,
    pub ice: IceConfig,
    pub store: StoreConfig,
    pub chat: ChatConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub turn: TurnConfig,
    pub sfu: SfuSection,
}

/// Loads the layered configuration. `overrides` are flag values, as a partial config.
pub fn load(
    file: Option<&Path>,
    overrides: serde_json::Value,
    dev: bool,
    purpose: Purpose,
) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.exists() {
            bail!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig
        // Only section-qualified variables (HUDDLE_<SECTION>__<KEY>) are configuration, so
        // other HUDDLE_* variables (HUDDLE_CONFIG, tool settings) never clash with it.
        .merge(
            Env::prefixed("HUDDLE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
        .merge(Serialized::defaults(overrides));
    let mut cfg: Config = fig.extract().map_err(|e| {
        let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
    })?;
    if dev {
        apply_dev_defaults(&mut cfg);
    }
    if cfg.turn.auth_secret.is_none() {
        cfg.turn.auth_secret = cfg.ice.turn_secret.clone();
    }
    if purpose != Purpose::Turn && purpose != Purpose::Admin {
        validate(&cfg, dev)?;
    }
    if purpose == Purpose::Turn || (purpose == Purpose::Serve && cfg.turn.enabled) {
        validate_turn(&cfg.turn)?;
    }
    if purpose == Purpose::Serve && cfg.sfu.enabled {
        validate_sfu(&cfg.sfu)?;
    }
    Ok(cfg)
}

/// `--dev`: loopback only, fixed development secrets, local ICE servers.
fn apply_dev_defaults(cfg: &mut Config) {
    if !cfg.http.listen.ip().is_loopback() {
        let port = cfg.http.listen.port();
        cfg.http.listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    }
    cfg.auth
        .token_secret
        .get_or_insert_with(|| Secret::new(DEV_TOKEN_SECRET));
    cfg.auth
        .api_secret
        .get_or_insert_with(|| Secret::new(DEV_API_SECRET));
    let loopback = |a: &mut Vec<SocketAddr>| {
        for addr in a.iter_mut() {
            if !addr.ip().is_loopback() {
                addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
        }
    };
    loopback(&mut cfg.turn.listen_udp);
    loopback(&mut cfg.turn.listen_tcp);
    loopback(&mut cfg.turn.listen_tls);
    if !cfg.turn.relay_ip.is_loopback() {
        cfg.turn.relay_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    cfg.turn.allow_loopback_peers = true;
    if !cfg.sfu.listen.ip().is_loopback() {
        cfg.sfu.listen.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    cfg.sfu.public_ips.retain(|ip| ip.is_loopback());
    if cfg.ice.stun_urls.is_empty() && cfg.ice.turn_urls.is_empty() {
        cfg.ice.stun_urls = vec!["stun:127.0.0.1:3478".into()];
        cfg.ice.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        cfg.ice
            .turn_secret
            .get_or_insert_with(|| Secret::new(DEV_TURN_SECRET));
    }
}

fn validate(cfg: &Config, dev: bool) -> anyhow::Result<()> {
    let hint = "set it in the config file or the environment, or run with --dev for development";
    match &cfg.auth.token_secret {
        None => bail!("auth.token_secret is not set (HUDDLE_AUTH__TOKEN_SECRET); {hint}"),
        Some(s) if s.expose().len() < 32 && !dev => {
            bail!("auth.token_secret must be at least 32 bytes long")
        }
        _ => {}
    }
    match &cfg.auth.api_secret {
        None => bail!("auth.api_secret is not set (HUDDLE_AUTH__API_SECRET); {hint}"),
        Some(s) if s.expose().len() < 16 && !dev => {
            bail!("auth.api_secret must be at least 16 bytes long")
        }
        _ => {}
    }
    if cfg.auth.token_ttl.is_zero() || cfg.auth.token_ttl > cfg.auth.max_token_ttl {
        bail!("auth.token_ttl must be positive and at most auth.max_token_ttl");
    }
    let s = &cfg.signal;
    if s.heartbeat_interval.is_zero() {
        bail!("signal.heartbeat_interval must be positive");
    }
    if s.heartbeat_timeout <= s.heartbeat_interval {
        bail!("signal.heartbeat_timeout must be longer than signal.heartbeat_interval");
    }
    if !(1024..=16 * 1024 * 1024).contains(&s.max_message_bytes) {
        bail!("signal.max_message_bytes must be between 1024 and 16777216");
    }
    if s.messages_per_second == 0 || s.message_burst == 0 {
        bail!("signal.messages_per_second and signal.message_burst must be positive");
    }
    if s.max_connections == 0 || s.max_connections_per_ip == 0 {
        bail!("signal.max_connections and signal.max_connections_per_ip must be positive");
    }
    if s.outbound_queue < 8 {
        bail!("signal.outbound_queue must be at least 8");
    }
    if cfg.rooms.max_participants == 0 || cfg.rooms.max_rooms == 0 {
        bail!("rooms.max_participants and rooms.max_rooms must be positive");
    }
    if cfg.calls.ring_timeout.is_zero() {
        bail!("calls.ring_timeout must be positive");
    }
    for url in &cfg.ice.stun_urls {
        if !url.starts_with("stun:") && !url.starts_with("stuns:") {
            bail!("ice.stun_urls: {url:?} must start with stun: or stuns:");
        }
    }
    for url in &cfg.ice.turn_urls {
        if !url.starts_with("turn:") && !url.starts_with("turns:") {
            bail!("ice.turn_urls: {url:?} must start with turn: or turns:");
        }
    }
    if !cfg.ice.turn_urls.is_empty() && cfg.ice.turn_secret.is_none() {
        bail!("ice.turn_secret must be set when ice.turn_urls is not empty");
    }
    let url = cfg.store.effective_url();
    if huddle_signal::store::Backend::of_url(&url).is_none() {
        bail!(
            "store.url {:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB",
            huddle_signal::store::redact(&url)
        );
    }
    let chat = &cfg.chat;
    // A text longer than what fits in one frame (signal.max_message_bytes) is refused as
    // message_too_large by the frame limit first.
    if chat.max_text_bytes == 0 {
        bail!("chat.max_text_bytes must be positive");
    }
    if chat.messages_per_second == 0 || chat.max_history_page == 0 {
        bail!("chat.messages_per_second and chat.max_history_page must be positive");
    }
    if let Some(hook) = &chat.webhook_url
        && !hook.starts_with("http://")
        && !hook.starts_with("https://")
    {
        bail!("chat.webhook_url {hook:?} must be an http:// or https:// URL");
    }
    tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .with_context(|| format!("log.level {:?} is not a valid filter", cfg.log.level))?;
    for origin in &cfg.http.allowed_origins {
        if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
            bail!(
                "http.allowed_origins: {origin:?} must look like https://host[:port] or be \"*\""
            );
        }
    }
    Ok(())
}

fn validate_sfu(s: &SfuSection) -> anyhow::Result<()> {
    if s.max_participants_per_room == 0 || s.max_tracks_per_participant == 0 || s.max_rooms == 0 {
        bail!("sfu limits must be positive");
    }
    if s.max_subscriber_bitrate < 50_000 {
        bail!("sfu.max_subscriber_bitrate is in bits per second and at least 50000");
    }
    if s.max_publisher_bitrate != 0 && s.max_publisher_bitrate < 50_000 {
        bail!("sfu.max_publisher_bitrate is in bits per second and at least 50000 (0: no cap)");
    }
    if s.initial_bitrate < 50_000 {
        bail!("sfu.initial_bitrate is in bits per second and at least 50000");
    }
    // Below these a camera and a microphone would not fit.
    if s.max_incoming_bitrate != 0 && s.max_incoming_bitrate < 1_000_000 {
        bail!("sfu.max_incoming_bitrate is in bits per second and at least 1000000 (0: no limit)");
    }
    if s.max_incoming_packet_rate != 0 && s.max_incoming_packet_rate < 200 {
        bail!(
            "sfu.max_incoming_packet_rate is in datagrams per second and at least 200 (0: no limit)"
        );
    }
    if let Some(tcp) = s.tcp_listen
        && tcp.ip() != s.listen.ip()
    {
        bail!(
            "sfu.tcp_listen ({tcp}) must have sfu.listen's address ({}): the TCP candidates \
             are advertised on the same addresses as the UDP ones; only the port may differ",
            s.listen.ip()
        );
    }
    Ok(())
}

fn validate_turn(t: &TurnConfig) -> anyhow::Result<()> {
    if t.min_port > t.max_port || t.min_port < 1024 {
        bail!("turn.min_port must be at least 1024 and not above turn.max_port");
    }
    if t.tls_cert.is_some() != t.tls_key.is_some() {
        bail!("turn.tls_cert and turn.tls_key must be set together");
    }
    if t.listen_udp.is_empty() && t.listen_tcp.is_empty() {
        bail!("turn.listen_udp and turn.listen_tcp are both empty");
    }
    if t.relay_ip.is_unspecified() && t.external_ip.is_none() {
        bail!(
            "turn.external_ip must be set when turn.relay_ip is unspecified (0.0.0.0): clients need the public address of relays"
        );
    }
    for u in &t.users {
        if !u.expose().contains(':') {
            bail!("turn.users: each entry must be name:password");
        }
    }
    if t.users.is_empty() && t.auth_secret.is_none() {
        bail!(
            "turn needs credentials: set turn.users, turn.auth_secret or ice.turn_secret (or run with --dev)"
        );
    }
    for net in t.allowed_peers.iter().chain(&t.denied_peers) {
        net.parse::<huddle_turn::policy::IpNet>()
            .map_err(|e| anyhow::anyhow!("turn.allowed_peers/denied_peers: {e}"))?;
    }
    if t.max_stream_connections == 0 || t.max_stream_connections_per_ip == 0 {
        bail!(
            "turn.max_stream_connections and turn.max_stream_connections_per_ip must be positive"
        );
    }
    if t.max_allocations == 0 || t.user_quota == 0 {
        bail!("turn.max_allocations and turn.user_quota must be positive");
    }
    Ok(())
}

/// The effective configuration as TOML, secrets redacted.
pub fn render(cfg: &Config) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let p = dir.path().join("huddle.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const SECRETS: &str = "[auth]\ntoken_secret = \"0123456789abcdef0123456789abcdef\"\napi_secret = \"0123456789abcdef\"\n[turn]\nenabled = false\n";

    #[test]
    fn missing_secrets_are_an_error_without_dev() {
        let err = load(None, json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.token_secret"), "{err}");
        let cfg = load(None, json!({}), true, Purpose::Serve).unwrap();
        assert!(cfg.http.listen.ip().is_loopback());
        assert_eq!(cfg.auth.token_secret.unwrap().expose(), DEV_TOKEN_SECRET);
    }

    #[test]
    fn sfu_advertises_the_listen_address_or_leaves_a_wildcard_to_the_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, SECRETS);
        // A wildcard listen address without public_ips: the SFU advertises the node's
        // interface addresses (found when it starts), so the config is complete.
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert!(cfg.sfu.listen.ip().is_unspecified());
        assert!(cfg.sfu.to_sfu_config().public_ips.is_empty());
        let dev = load(None, json!({}), true, Purpose::Serve).unwrap();
        assert!(dev.sfu.listen.ip().is_loopback());
        assert_eq!(
            dev.sfu.to_sfu_config().public_ips,
            vec![dev.sfu.listen.ip()]
        );
    }

    #[test]
    fn ice_tcp_listens_beside_the_udp_socket_unless_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let dev = load(None, json!({}), true, Purpose::Serve).unwrap();
        let tcp = dev.sfu.to_sfu_config().tcp_bind.unwrap();
        assert_eq!(tcp.ip(), dev.sfu.listen.ip());
        assert_eq!(tcp.port(), huddle_sfu::DEFAULT_TCP_PORT);
        // Any free UDP port (tests): any free TCP port too, not a fixed one.
        let p = write(&dir, &format!("{SECRETS}[sfu]\nlisten = \"127.0.0.1:0\"\n"));
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(
            cfg.sfu.to_sfu_config().tcp_bind,
            Some("127.0.0.1:0".parse().unwrap())
        );
        let p = write(
            &dir,
            &format!(
                "{SECRETS}[sfu]\nlisten = \"127.0.0.1:7882\"\ntcp_listen = \"127.0.0.1:443\"\n"
            ),
        );
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(
            cfg.sfu.to_sfu_config().tcp_bind,
            Some("127.0.0.1:443".parse().unwrap())
        );
        let p = write(&dir, &format!("{SECRETS}[sfu]\nice_tcp = false\n"));
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(cfg.sfu.to_sfu_config().tcp_bind, None);
        let p = write(
            &dir,
            &format!(
                "{SECRETS}[sfu]\nlisten = \"127.0.0.1:7882\"\ntcp_listen = \"127.0.0.2:7881\"\n"
            ),
        );
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sfu.tcp_listen"), "{err}");
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            &format!(
                "{SECRETS}[http]\nlisten = \"127.0.0.1:9000\"\n[signal]\nheartbeat_interval = \"5s\"\n[sfu]\npublic_ips = [\"192.0.2.1\"]\n"
            ),
        );
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(cfg.http.listen.port(), 9000);
        assert_eq!(cfg.signal.heartbeat_interval, Duration::from_secs(5));
        let cfg = load(
            Some(&p),
            json!({"http": {"listen": "127.0.0.1:9001"}}),
            false,
            Purpose::Serve,
        )
        .unwrap();
        assert_eq!(cfg.http.listen.port(), 9001);
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            &format!("{SECRETS}[http]\nlisten = \"not an address\"\n"),
        );
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        let p = write(&dir, &format!("{SECRETS}[rooms]\nmax_participantz = 3\n"));
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_participantz"), "{err}");
        let p = write(
            &dir,
            &format!(
                "{SECRETS}[signal]\nheartbeat_interval = \"30s\"\nheartbeat_timeout = \"10s\"\n"
            ),
        );
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("signal.heartbeat_timeout"), "{err}");
        let p = write(
            &dir,
            "[auth]\ntoken_secret = \"short\"\napi_secret = \"0123456789abcdef\"\n",
        );
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.token_secret"), "{err}");
        // Bit rates are bits per second: a value that reads as kbit/s is refused.
        let p = write(
            &dir,
            &format!("{SECRETS}[sfu]\nmax_publisher_bitrate = 500\n"),
        );
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sfu.max_publisher_bitrate"), "{err}");
        let p = write(
            &dir,
            &format!("{SECRETS}[sfu]\nmax_publisher_bitrate = 1500000\n"),
        );
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(
            cfg.sfu.to_sfu_config().bandwidth.max_publisher_bitrate,
            1_500_000
        );
        // Incoming limits: bits and datagrams per second, 0 for none; carried through.
        for (field, value) in [
            ("max_incoming_bitrate", 20_000),
            ("max_incoming_packet_rate", 50),
        ] {
            let p = write(&dir, &format!("{SECRETS}[sfu]\n{field} = {value}\n"));
            let err = load(Some(&p), json!({}), false, Purpose::Serve)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("sfu.{field}")), "{err}");
        }
        let p = write(
            &dir,
            &format!("{SECRETS}[sfu]\nmax_incoming_bitrate = 0\nmax_incoming_packet_rate = 2000\n"),
        );
        let c = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap()
            .sfu
            .to_sfu_config();
        assert_eq!(
            (c.max_incoming_bitrate, c.max_incoming_packet_rate),
            (0, 2000)
        );
        // The starting estimate: in bits per second, at most the subscriber cap (a cap
        // below the default start lowers the start with it).
        let p = write(&dir, &format!("{SECRETS}[sfu]\ninitial_bitrate = 300\n"));
        let err = load(Some(&p), json!({}), false, Purpose::Serve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sfu.initial_bitrate"), "{err}");
        let p = write(&dir, &format!("{SECRETS}[sfu]\ninitial_bitrate = 300000\n"));
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(cfg.sfu.to_sfu_config().bandwidth.initial_bitrate, 300_000);
        let p = write(
            &dir,
            &format!("{SECRETS}[sfu]\nmax_subscriber_bitrate = 250000\n"),
        );
        let cfg = load(Some(&p), json!({}), false, Purpose::Serve).unwrap();
        assert_eq!(cfg.sfu.to_sfu_config().bandwidth.initial_bitrate, 250_000);
    }

    #[test]
    fn render_redacts_secrets() {
        let cfg = load(None, json!({}), true, Purpose::Serve).unwrap();
        let text = render(&cfg).unwrap();
        assert!(!text.contains(DEV_TOKEN_SECRET));
        assert!(!text.contains(DEV_API_SECRET));
        assert!(text.contains("<redacted>"));
    }
}
