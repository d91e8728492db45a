//! `huddle admin`: the admin REST API (docs/protocol.md, "Admin REST API") from the
//! command line, for operators of a running server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, bail};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::cli::{AdminAction, AdminArgs, MediaKind};
use crate::config::Config;

/// Sends the request `args` names and prints the answer: JSON pretty-printed, `ok`
/// for an empty one. An error status is an error carrying the server's message.
pub async fn run(args: &AdminArgs, cfg: &Config) -> anyhow::Result<()> {
    let secret = args
        .api_secret
        .clone()
        .or_else(|| cfg.auth.api_secret.as_ref().map(|s| s.expose().to_owned()))
        .context(
            "no API secret: pass --api-secret (or HUDDLE_API_SECRET), set auth.api_secret \
             (HUDDLE_AUTH__API_SECRET), or use --dev against a development server",
        )?;
    let base = match &args.url {
        Some(u) => u.clone(),
        None => format!("http://{}", reachable(cfg.http.listen)),
    };
    let (method, segments, body) = request(&args.action);
    let mut url = Url::parse(&base).with_context(|| format!("--url {base:?}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url {base:?} cannot have a path"))?
        .pop_if_empty()
        .extend(&segments);
    let mut req = reqwest::Client::new()
        .request(method, url.clone())
        .bearer_auth(secret);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("{base} cannot be reached"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    let json: Option<Value> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let message = json
            .as_ref()
            .and_then(|j| j["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{url}: {status}: {message}");
    }
    match json {
        Some(j) => println!("{}", serde_json::to_string_pretty(&j)?),
        None => println!("ok"),
    }
    Ok(())
}

/// The method, path segments and body of an action's request.
fn request(action: &AdminAction) -> (Method, Vec<&str>, Option<Value>) {
    match action {
        AdminAction::Rooms => (Method::GET, vec!["v1", "rooms"], None),
        AdminAction::Participants { room } => {
            (Method::GET, vec!["v1", "rooms", room, "participants"], None)
        }
        AdminAction::Media { room } => (Method::GET, vec!["v1", "rooms", room, "media"], None),
        AdminAction::Remove { room, identity } => (
            Method::DELETE,
            vec!["v1", "rooms", room, "participants", identity],
            None,
        ),
        AdminAction::Close { room } => (Method::DELETE, vec!["v1", "rooms", room], None),
        AdminAction::Mute {
            room,
            identity,
            kind,
            unmute,
        } => {
            let mut body = json!({ "muted": !unmute });
            if let Some(k) = kind {
                body["kind"] = json!(match k {
                    MediaKind::Audio => "audio",
                    MediaKind::Video => "video",
                });
            }
            (
                Method::POST,
                vec!["v1", "rooms", room, "participants", identity, "mute"],
                Some(body),
            )
        }
    }
}

/// Where a server listening on `listen` is reached from this machine: a wildcard
/// address through loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_reached_through_loopback() {
        let r = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(r("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(r("[::]:8080"), "[::1]:8080");
        assert_eq!(r("10.1.2.3:9000"), "10.1.2.3:9000");
    }

    #[test]
    fn mute_requests_name_the_kind_only_when_given() {
        let action = AdminAction::Mute {
            room: "a b".into(),
            identity: "x/y".into(),
            kind: Some(MediaKind::Video),
            unmute: true,
        };
        let (method, path, body) = request(&action);
        assert_eq!(method, Method::POST);
        assert_eq!(path, ["v1", "rooms", "a b", "participants", "x/y", "mute"]);
        assert_eq!(body, Some(json!({"muted": false, "kind": "video"})));
        let action = AdminAction::Mute {
            room: "r".into(),
            identity: "i".into(),
            kind: None,
            unmute: false,
        };
        let (_, _, body) = request(&action);
        assert_eq!(body, Some(json!({"muted": true})));
    }
}
