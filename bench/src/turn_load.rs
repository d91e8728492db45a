//! `turn-load`: the same load, from coturn's own `turnutils_uclient` through a TURN server
//! to a `turnutils_peer` echo, against huddle's TURN server and against coturn's
//! `turnserver` in one run. Reports relayed packets per second, server CPU time per
//! relayed packet, loss, and server memory per idle allocation, with huddle/coturn ratios.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{BenchError, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Concurrent client sessions (each one allocation).
    pub clients: usize,
    /// Messages each session sends (each is echoed back).
    pub messages: usize,
    /// Payload bytes per message.
    pub length: usize,
    /// Milliseconds between a session's messages (0: as fast as possible).
    pub interval_ms: u32,
    /// Server worker threads to compare at.
    pub threads: Vec<usize>,
    /// Allocations held open to measure memory.
    pub idle_allocations: usize,
}

/// One server under one load.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub server: &'static str,
    pub threads: usize,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub wall_seconds: f64,
    /// Server user+system CPU time during the run.
    pub server_cpu_seconds: f64,
    /// Each echoed message is relayed twice (client→peer, peer→client).
    pub relayed_packets: u64,
    pub relayed_packets_per_second: f64,
    pub relayed_mbps: f64,
    /// Relayed packets per second of server CPU: throughput per core.
    pub packets_per_cpu_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub server: &'static str,
    pub allocations: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_allocation: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub options: Options,
    pub runs: Vec<Run>,
    pub memory: Vec<Memory>,
    /// huddle ÷ coturn, per thread count: packets per CPU second.
    pub ratio_packets_per_cpu_second: Vec<(usize, f64)>,
    /// coturn ÷ huddle: memory per idle allocation (above 1 means huddle is leaner).
    pub ratio_memory: Option<f64>,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find(tool: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|f| f.is_file())
        })
        .ok_or_else(|| {
            BenchError::Server(format!("{tool} not found: install Debian's coturn package"))
        })
}

/// Waits until a STUN Binding request on `port` is answered.
fn wait_ready(port: u16) -> Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        sock.send_to(&req, SocketAddr::from(([127, 0, 0, 1], port)))?;
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n >= 20
            && buf[0] == 0x01
            && buf[1] == 0x01
        {
            return Ok(());
        }
    }
    Err(BenchError::Server(format!("no STUN answer on port {port}")))
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Starts a `turnutils_peer` UDP echo on a free loopback port.
fn start_peer() -> Result<(Proc, u16)> {
    let port = free_udp_port()?;
    let child = Command::new(find("turnutils_peer")?)
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((Proc(child), port))
}

/// Starts a server of `kind` with `threads` on a free port; returns it and its port.
fn start_server(
    kind: &'static str,
    huddle: &Path,
    threads: usize,
    ports: (u16, u16),
) -> Result<(Proc, u16)> {
    let port = free_udp_port()?;
    let child = match kind {
        "huddle" => Command::new(huddle)
            .args([
                "turn",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--relay-ip",
                "127.0.0.1",
            ])
            .args([
                "--min-port",
                &ports.0.to_string(),
                "--max-port",
                &ports.1.to_string(),
            ])
            .args([
                "--user",
                "bench:bench",
                "--realm",
                "bench",
                "--allow-loopback-peers",
            ])
            .args([
                "--threads",
                &threads.to_string(),
                "--max-allocations",
                "1000000",
                "--user-quota",
                "1000000",
            ])
            .env("HUDDLE_LOG__LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        _ => Command::new(find("turnserver")?)
            .args([
                "-n",
                "-L",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--relay-ip=127.0.0.1",
            ])
            .args([
                format!("--min-port={}", ports.0),
                format!("--max-port={}", ports.1),
            ])
            .args([
                "-a",
                "-u",
                "bench:bench",
                "-r",
                "bench",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
            ])
            .args([
                "--allow-loopback-peers",
                "--no-stdout-log",
                "--log-file=/dev/null",
                "--simple-log",
            ])
            .args(["-m", &threads.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    };
    let proc = Proc(child);
    wait_ready(port)?;
    Ok((proc, port))
}

fn uclient(port: u16, peer: u16, args: &[String]) -> Result<Command> {
    let mut cmd = Command::new(find("turnutils_uclient")?);
    cmd.args([
        "-u",
        "bench",
        "-w",
        "bench",
        "-c",
        "-e",
        "127.0.0.1",
        "-r",
        &peer.to_string(),
        "-p",
        &port.to_string(),
    ])
    .args(args)
    .arg("127.0.0.1");
    Ok(cmd)
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| l.split(key).nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

fn load_run(
    kind: &'static str,
    huddle: &Path,
    threads: usize,
    opts: &Options,
    ports: (u16, u16),
) -> Result<Run> {
    let (_peer, peer_port) = start_peer()?;
    let (server, port) = start_server(kind, huddle, threads, ports)?;
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let args = vec![
        "-m".to_string(),
        opts.clients.to_string(),
        "-n".into(),
        opts.messages.to_string(),
        "-l".into(),
        opts.length.to_string(),
        "-z".into(),
        opts.interval_ms.to_string(),
    ];
    let out = uclient(port, peer_port, &args)?.output()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let sent = field(&text, "tot_send_msgs=")
        .ok_or_else(|| BenchError::Protocol(format!("uclient printed no totals:\n{text}")))?;
    let received = field(&text, "tot_recv_msgs=").unwrap_or(0);
    let lost = field(&text, "Total lost packets ").unwrap_or(sent);
    let relayed = received * 2;
    Ok(Run {
        server: kind,
        threads,
        sent,
        received,
        lost,
        wall_seconds: wall,
        server_cpu_seconds: cpu,
        relayed_packets: relayed,
        relayed_packets_per_second: relayed as f64 / wall,
        relayed_mbps: (relayed * opts.length as u64 * 8) as f64 / wall / 1e6,
        packets_per_cpu_second: if cpu > 0.0 { relayed as f64 / cpu } else { 0.0 },
    })
}

fn memory_run(
    kind: &'static str,
    huddle: &Path,
    opts: &Options,
    ports: (u16, u16),
) -> Result<Memory> {
    let (_peer, peer_port) = start_peer()?;
    let (server, port) = start_server(kind, huddle, 1, ports)?;
    let pid = server.0.id();
    // Warm up with a few allocations that come and go.
    let warm = vec!["-m".to_string(), "4".into(), "-n".into(), "2".into()];
    uclient(port, peer_port, &warm)?.output()?;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(pid);
    let fds_before = fd_count(pid);
    let hold = vec![
        "-m".to_string(),
        opts.idle_allocations.to_string(),
        "-n".into(),
        "1".into(),
        "-h".into(),
    ];
    let holder = Proc(
        uclient(port, peer_port, &hold)?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    // Wait until every allocation is made: each one binds a relay socket, so the
    // server's descriptor count rises by the number of allocations.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fd_count(pid) < fds_before + opts.idle_allocations && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let made = fd_count(pid).saturating_sub(fds_before);
    if made < opts.idle_allocations {
        return Err(BenchError::Server(format!(
            "{kind}: only {made} of {} allocations were made",
            opts.idle_allocations
        )));
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_bytes(pid);
    drop(holder);
    Ok(Memory {
        server: kind,
        allocations: opts.idle_allocations,
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_allocation: after.saturating_sub(before) as f64
            / opts.idle_allocations.max(1) as f64,
    })
}

/// Runs the comparison; `huddle` is the path of the huddle binary.
pub fn run(huddle: &Path, opts: &Options, progress: impl Fn(&str)) -> Result<Report> {
    let mut runs = Vec::new();
    for &threads in &opts.threads {
        for (kind, ports) in [("huddle", (50000, 54999)), ("coturn", (55000, 59999))] {
            progress(&format!(
                "{kind}, {threads} thread(s): {} clients × {} messages",
                opts.clients, opts.messages
            ));
            runs.push(load_run(kind, huddle, threads, opts, ports)?);
        }
    }
    let mut memory = Vec::new();
    for (kind, ports) in [("huddle", (50000, 54999)), ("coturn", (55000, 59999))] {
        progress(&format!(
            "{kind}: memory of {} idle allocations",
            opts.idle_allocations
        ));
        memory.push(memory_run(kind, huddle, opts, ports)?);
    }
    let ratio_packets_per_cpu_second = opts
        .threads
        .iter()
        .filter_map(|&t| {
            let h = runs
                .iter()
                .find(|r| r.server == "huddle" && r.threads == t)?;
            let c = runs
                .iter()
                .find(|r| r.server == "coturn" && r.threads == t)?;
            (c.packets_per_cpu_second > 0.0)
                .then(|| (t, h.packets_per_cpu_second / c.packets_per_cpu_second))
        })
        .collect();
    let ratio_memory = match (memory.first(), memory.get(1)) {
        (Some(h), Some(c)) if h.bytes_per_allocation > 0.0 => {
            Some(c.bytes_per_allocation / h.bytes_per_allocation)
        }
        _ => None,
    };
    Ok(Report {
        scenario: "turn-load",
        options: opts.clone(),
        runs,
        memory,
        ratio_packets_per_cpu_second,
        ratio_memory,
    })
}

pub fn summary(r: &Report) -> String {
    let mut s = String::from(
        "server  threads  sent/received   lost  wall s  relayed pkt/s    Mbps  server CPU s  pkt per CPU s\n",
    );
    for x in &r.runs {
        s.push_str(&format!(
            "{:<7} {:>7}  {:>7}/{:<7} {:>5}  {:>6.2}  {:>13.0}  {:>6.1}  {:>12.2}  {:>13.0}\n",
            x.server,
            x.threads,
            x.sent,
            x.received,
            x.lost,
            x.wall_seconds,
            x.relayed_packets_per_second,
            x.relayed_mbps,
            x.server_cpu_seconds,
            x.packets_per_cpu_second
        ));
    }
    for (t, ratio) in &r.ratio_packets_per_cpu_second {
        s.push_str(&format!(
            "huddle/coturn relayed packets per CPU second at {t} thread(s): {ratio:.2}x\n"
        ));
    }
    for m in &r.memory {
        s.push_str(&format!(
            "{:<7} memory per idle allocation: {:.0} bytes ({} allocations)\n",
            m.server, m.bytes_per_allocation, m.allocations
        ));
    }
    if let Some(m) = r.ratio_memory {
        s.push_str(&format!("coturn/huddle memory per allocation: {m:.2}x\n"));
    }
    s
}
