//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "huddle",
    version,
    about = "Real-time audio/video calling server: signalling, STUN/TURN, SFU and chat in one binary",
    long_about = "Real-time audio/video calling server: signalling, STUN/TURN, SFU and chat in one binary.\n\n\
Configuration comes from a TOML file (--config), overridden by HUDDLE_* environment variables \
(HUDDLE_<SECTION>__<KEY>, e.g. HUDDLE_HTTP__LISTEN=0.0.0.0:8080), overridden by flags. \
See docs/deployment.md for every key."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API, WebSocket signalling and the web demo.
    Serve(ServeArgs),
    /// Run the STUN/TURN server alone, for a dedicated relay machine.
    Turn(Box<TurnArgs>),
    /// Mint an access token with the configured token secret.
    Token(TokenArgs),
    /// Validate a configuration and print the effective one, secrets redacted.
    CheckConfig(ConfigArgs),
    /// Run call-quality and capacity benchmarks.
    Bench(BenchArgs),
    /// Manage a running server through its admin API: rooms, participants, mutes.
    Admin(AdminArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Where the API secret and the default URL come from (auth.api_secret,
    /// http.listen); --dev uses the development secret.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The server's base URL [default: http://<http.listen>, loopback for a wildcard].
    #[arg(long)]
    pub url: Option<String>,
    /// The API secret [default: auth.api_secret].
    #[arg(long, env = "HUDDLE_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// List the rooms.
    Rooms,
    /// List a room's participants.
    Participants { room: String },
    /// The SFU's statistics of a room's media.
    Media { room: String },
    /// Remove a participant from a room.
    Remove { room: String, identity: String },
    /// Close a room, removing everyone.
    Close { room: String },
    /// Mute (or with --unmute, unmute) what a participant publishes, for everyone.
    Mute {
        room: String,
        identity: String,
        /// Only this kind of track [default: both].
        #[arg(long)]
        kind: Option<MediaKind>,
        /// Unmute instead.
        #[arg(long)]
        unmute: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MediaKind {
    Audio,
    Video,
}

/// Where configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "HUDDLE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Development mode: bind to loopback only, use the documented fixed development
    /// secrets, allow only localhost origins and enable the demo's token endpoint.
    #[arg(long)]
    pub dev: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address for HTTP, WebSocket and the web demo [config: http.listen, default 0.0.0.0:8080;
    /// 127.0.0.1:8080 with --dev]. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite store and uploads [config: store.data_dir, default ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL [config: store.url, default sqlite://<data_dir>/huddle.db].
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
    /// Log format [config: log.format].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `huddle_signal=debug` [config: log.level; RUST_LOG wins].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TurnArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// UDP and TCP listen address, repeatable [config: turn.listen_udp, turn.listen_tcp;
    /// default 0.0.0.0:3478]. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// TLS listen address, repeatable [config: turn.listen_tls; default 0.0.0.0:5349]; used
    /// when a certificate is given.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for TURN over TLS [config: turn.tls_cert].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TURN over TLS [config: turn.tls_key].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Address relay sockets bind to [config: turn.relay_ip].
    #[arg(long, value_name = "IP")]
    pub relay_ip: Option<std::net::IpAddr>,
    /// IPv6 address for IPv6 relays [config: turn.relay_ip_v6; none: no IPv6 relaying].
    #[arg(long, value_name = "IP")]
    pub relay_ip_v6: Option<std::net::IpAddr>,
    /// Public IP advertised in relayed addresses [config: turn.external_ip].
    #[arg(long, value_name = "IP")]
    pub external_ip: Option<std::net::IpAddr>,
    /// Lowest relay port [config: turn.min_port, default 49152].
    #[arg(long)]
    pub min_port: Option<u16>,
    /// Highest relay port [config: turn.max_port, default 65535].
    #[arg(long)]
    pub max_port: Option<u16>,
    /// Realm [config: turn.realm, default huddle].
    #[arg(long)]
    pub realm: Option<String>,
    /// Static user `name:password`, repeatable [config: turn.users].
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub user: Vec<String>,
    /// TURN REST shared secret (coturn's static-auth-secret) [config: turn.auth_secret].
    #[arg(long, value_name = "SECRET", env = "HUDDLE_TURN_AUTH_SECRET")]
    pub auth_secret: Option<String>,
    /// Allow relaying to loopback peers (tests) [config: turn.allow_loopback_peers].
    #[arg(long)]
    pub allow_loopback_peers: bool,
    /// Allocations in total [config: turn.max_allocations].
    #[arg(long)]
    pub max_allocations: Option<usize>,
    /// Allocations per user [config: turn.user_quota].
    #[arg(long)]
    pub user_quota: Option<usize>,
    /// Relayed bytes per second per user, both directions; 0 for no limit
    /// [config: turn.user_bandwidth].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub user_bandwidth: Option<u64>,
    /// Relay threads, each a shard with its own sockets [config: turn.threads; default:
    /// one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Serve /metrics and /healthz on this address [config: turn.metrics_listen].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format [config: log.format].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Room the token may join; `*` for any room.
    #[arg(long)]
    pub room: Option<String>,
    /// The user's identity (stable user id).
    #[arg(long)]
    pub identity: String,
    /// Display name shown to others (defaults to the identity).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. `30m`, `6h` [default: auth.token_ttl].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Comma-separated grants from publish, subscribe, chat, admin.
    #[arg(long, value_delimiter = ',', default_value = "publish,subscribe,chat")]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Grant {
    Publish,
    Subscribe,
    Chat,
    Admin,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: BenchScenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchScenario {
    /// Many authenticated WebSocket clients join rooms: join latency and memory per idle
    /// connection of the server.
    SignalLoad(SignalLoadArgs),
    /// Synthetic calls under packet loss, jitter and delay: mouth-to-ear delay, loss
    /// before and after repair, concealment, SNR, E-model MOS, video frames and freezes.
    Call(CallArgs),
    /// `call` over a grid of packet loss × jitter, one call per point against one server:
    /// a table, a JSON report and SVG plots (MOS, mouth-to-ear delay, concealment).
    Sweep(SweepArgs),
    /// SFU forwarding capacity: rooms of synthetic WebRTC participants (audio, or audio and
    /// video) are added step by step until loss or latency degrade.
    SfuLoad(SfuLoadArgs),
    /// Chat throughput and latency: send → durable → delivered to every member, for
    /// conversations of several sizes.
    ChatLoad(ChatLoadArgs),
    /// TURN relay throughput, CPU and memory: huddle's TURN server against coturn's, with
    /// coturn's turnutils_uclient as the load (needs Debian's coturn package).
    TurnLoad(TurnLoadArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SfuLoadArgs {
    /// Rooms added at each step.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Participants per room; each receives every other publisher.
    #[arg(long, default_value_t = 4)]
    pub participants: usize,
    /// Of those, how many publish (the first ones); the rest only receive, as the
    /// audience of a webinar or a big meeting does. All publish when left out.
    #[arg(long)]
    pub publishers: Option<usize>,
    /// The ramp ends at this many rooms.
    #[arg(long, default_value_t = 50)]
    pub max_rooms: usize,
    /// Seconds of measurement per step.
    #[arg(long, default_value_t = 10)]
    pub step_seconds: u64,
    /// Also publish a 30 fps H.264-like video track per participant.
    #[arg(long)]
    pub video: bool,
    /// RTP packets per video delta frame (about 1100 bytes each); keyframes are 4 times larger.
    #[arg(long, default_value_t = 6)]
    pub video_packets: usize,
    /// Seconds between video keyframes.
    #[arg(long, default_value_t = 2)]
    pub keyframe_seconds: u32,
    /// Bytes of each audio packet's payload.
    #[arg(long, default_value_t = 100)]
    pub audio_bytes: usize,
    /// A step with more frame loss than this (percent) is degraded.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss_percent: f64,
    /// A step with a higher p99 added latency than this (ms) is degraded.
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
    /// Threads running the synthetic participants.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Participants connect over ICE-TCP (RFC 6544) to the SFU's passive TCP candidates
    /// instead of UDP, as clients behind a firewall that blocks UDP do; latency is then
    /// taken when a frame is read.
    #[arg(long)]
    pub tcp: bool,
    /// Participants accept redundant audio (RFC 2198 RED) as browsers do, so the SFU
    /// sends and receives each audio frame with the previous one inside (when its
    /// `sfu.audio_red` is on, the default).
    #[arg(long)]
    pub red: bool,
    /// Benchmark a running server at this URL instead of starting one (its SFU must be
    /// reachable from here); its CPU and memory are then not measured.
    #[arg(long, requires = "api_secret")]
    pub url: Option<String>,
    /// API secret of the server given by --url.
    #[arg(long, env = "HUDDLE_BENCH_API_SECRET")]
    pub api_secret: Option<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-sfu-load.json")]
    pub out: PathBuf,
    /// Compare with an earlier report of this scenario: every metric, new/old and new-old.
    #[arg(long, value_name = "OLD_JSON")]
    pub compare: Option<PathBuf>,
}

/// Which way impairments apply, from each participant's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// SFU -> participant: the path between two participants is impaired once.
    Down,
    /// Participant -> SFU.
    Up,
    /// Both: the path between two participants crosses two impaired links.
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Participants in the call (each hears all others).
    #[arg(long, default_value_t = 2)]
    pub participants: usize,
    /// Seconds measured (after a warm-up of one second).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Packet loss, 0..1 (e.g. 0.05 for 5%).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Mean loss burst in packets: 1 is random loss, more is Gilbert–Elliott bursts.
    #[arg(long, default_value_t = 1.0)]
    pub burst: f64,
    /// Added one-way delay, ms.
    #[arg(long, default_value_t = 0.0)]
    pub delay_ms: f64,
    /// Extra delay uniform in [0, jitter], ms.
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Let jitter reorder packets.
    #[arg(long)]
    pub reorder: bool,
    /// Bandwidth cap in kbit/s (0: none).
    #[arg(long, default_value_t = 0)]
    pub bandwidth_kbps: u64,
    /// Where the impairments apply.
    #[arg(long, value_enum, default_value_t = Direction::Down)]
    pub direction: Direction,
    /// Also send H.264 video (a moving test pattern).
    #[arg(long)]
    pub video: bool,
    #[arg(long, default_value_t = 320)]
    pub width: usize,
    #[arg(long, default_value_t = 240)]
    pub height: usize,
    #[arg(long, default_value_t = 15)]
    pub fps: u32,
    #[arg(long, default_value_t = 300)]
    pub video_kbps: u32,
    /// Opus bitrate, kbit/s.
    #[arg(long, default_value_t = 32)]
    pub audio_kbps: u32,
    /// Do not ask for retransmissions (video) or answer them.
    #[arg(long)]
    pub no_nack: bool,
    /// Send Opus without in-band FEC.
    #[arg(long)]
    pub no_fec: bool,
    /// Do not offer redundant audio (RED, RFC 2198): plain Opus each way.
    #[arg(long)]
    pub no_red: bool,
    /// Seed of the impairments and the test signal.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Speak this WAV file (48 kHz, 16-bit; the first channel) instead of the built-in
    /// speech-like signal.
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-call.json")]
    pub out: PathBuf,
    /// Compare with an earlier call report: its summary metrics, new/old and new-old.
    #[arg(long, value_name = "OLD_JSON")]
    pub compare: Option<PathBuf>,
    /// Call through a running server at this URL (e.g. http://10.0.0.5:8080) instead of
    /// starting one; needs --api-secret (to mint tokens) and --sfu-addr.
    #[arg(long, requires_all = ["api_secret", "sfu_addr"])]
    pub url: Option<String>,
    /// API secret of the server given by --url.
    #[arg(long, env = "HUDDLE_BENCH_API_SECRET")]
    pub api_secret: Option<String>,
    /// UDP address of that server's SFU as clients reach it (its `sfu.public_ips` and
    /// port), where the shims send media.
    #[arg(long)]
    pub sfu_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Packet loss values of the grid, fractions 0..1, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.02,0.05,0.1,0.2")]
    pub loss: Vec<f64>,
    /// Jitter values of the grid, ms, comma-separated (extra delay uniform in [0, value]).
    #[arg(long, value_delimiter = ',', default_value = "0,30,60")]
    pub jitter_ms: Vec<f64>,
    /// Participants in each call.
    #[arg(long, default_value_t = 2)]
    pub participants: usize,
    /// Seconds measured per point (after a warm-up of one second).
    #[arg(long, default_value_t = 6.0)]
    pub duration: f64,
    /// Mean loss burst in packets: 1 is random loss, more is Gilbert–Elliott bursts.
    #[arg(long, default_value_t = 1.0)]
    pub burst: f64,
    /// Added one-way delay at every point, ms.
    #[arg(long, default_value_t = 0.0)]
    pub delay_ms: f64,
    /// Let jitter reorder packets.
    #[arg(long)]
    pub reorder: bool,
    /// Where the impairments apply.
    #[arg(long, value_enum, default_value_t = Direction::Down)]
    pub direction: Direction,
    /// Also send H.264 video (320x240, 15 fps, 300 kbit/s).
    #[arg(long)]
    pub video: bool,
    /// Opus bitrate, kbit/s.
    #[arg(long, default_value_t = 32)]
    pub audio_kbps: u32,
    /// Do not ask for retransmissions (video) or answer them.
    #[arg(long)]
    pub no_nack: bool,
    /// Send Opus without in-band FEC.
    #[arg(long)]
    pub no_fec: bool,
    /// Do not offer redundant audio (RED, RFC 2198): plain Opus each way.
    #[arg(long)]
    pub no_red: bool,
    /// Seed of the impairments and the test signal (the same at every point).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for the JSON report (sweep.json) and the plots (*.svg).
    #[arg(long, default_value = "bench-sweep")]
    pub out_dir: PathBuf,
    /// Compare with an earlier sweep report, point by point (matched by loss and jitter).
    #[arg(long, value_name = "OLD_JSON")]
    pub compare: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TurnLoadArgs {
    /// Concurrent client sessions.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    /// Messages per session (each is echoed back by the peer).
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 160)]
    pub length: usize,
    /// Milliseconds between a session's messages (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u32,
    /// Worker threads to compare at (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Allocations held open to measure memory per allocation.
    #[arg(long, default_value_t = 200)]
    pub idle_allocations: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-turn-load.json")]
    pub out: PathBuf,
    /// Compare with an earlier report of this scenario: every metric, new/old and new-old.
    #[arg(long, value_name = "OLD_JSON")]
    pub compare: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ChatLoadArgs {
    /// Conversation sizes to measure (members, the sender included; 2 is a one-to-one
    /// conversation).
    #[arg(long, value_delimiter = ',', default_value = "2,100")]
    pub members: Vec<usize>,
    /// Messages in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Unacked messages kept in flight in the throughput phase.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Messages per second in the latency phase (default: half the measured throughput).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// Store of the server started for the run: its default SQLite file, or this URL
    /// (e.g. postgres://postgres@127.0.0.1:55432/bench, an empty database).
    #[arg(long)]
    pub store_url: Option<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-chat-load.json")]
    pub out: PathBuf,
    /// Compare with an earlier report of this scenario: every metric, new/old and new-old.
    #[arg(long, value_name = "OLD_JSON")]
    pub compare: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SignalLoadArgs {
    /// Connections to open; repeat or separate with commas to run several sizes.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub connections: Vec<usize>,
    /// Participants per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Connections set up concurrently.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Benchmark a running server at this URL (e.g. http://127.0.0.1:8080) instead of
    /// starting one; memory is then not measured. Its per-IP connection limit must allow
    /// the load.
    #[arg(long, requires = "api_secret")]
    pub url: Option<String>,
    /// API secret of the server given by --url.
    #[arg(long, env = "HUDDLE_BENCH_API_SECRET")]
    pub api_secret: Option<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-signal-load.json")]
    pub out: PathBuf,
    /// Compare with an earlier report of this scenario: every metric, new/old and new-old.
    #[arg(long, value_name = "OLD_JSON")]
    pub compare: Option<PathBuf>,
}
