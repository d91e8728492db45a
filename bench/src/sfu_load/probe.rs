//! Measurements of processes and of the server: CPU time from `/proc/<pid>/stat`, and the
//! SFU's counters from the server's Prometheus `/metrics`.

use std::collections::HashMap;
use std::sync::OnceLock;

/// User + system CPU seconds of process `pid` (`self` for this process), from fields 14
/// and 15 of `/proc/<pid>/stat` (proc(5)).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing ')'.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)` through getconf(1); 100 on Linux when it cannot be asked.
fn clock_ticks() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|hz| *hz > 0.0)
            .unwrap_or(100.0)
    })
}

/// Every `huddle_sfu_*` sample without labels, by name.
pub async fn sfu_metrics(http: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let Ok(resp) = http.get(format!("{base}/metrics")).send().await else {
        return HashMap::new();
    };
    let Ok(text) = resp.text().await else {
        return HashMap::new();
    };
    parse_sfu_metrics(&text)
}

fn parse_sfu_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("huddle_sfu_"))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read() {
        let t = cpu_seconds("self").expect("procfs");
        assert!(t >= 0.0);
    }

    #[test]
    fn sfu_samples_are_parsed() {
        let text = "# HELP huddle_sfu_packets_out UDP datagrams sent\n\
                    huddle_sfu_packets_out_total 1234\n\
                    huddle_sfu_rooms 3\n\
                    huddle_chat_x_total 9\n\
                    huddle_sfu_bad_total nan-ish\n";
        let m = parse_sfu_metrics(text);
        assert_eq!(m.get("huddle_sfu_packets_out_total"), Some(&1234.0));
        assert_eq!(m.get("huddle_sfu_rooms"), Some(&3.0));
        assert_eq!(m.len(), 2);
    }
}
