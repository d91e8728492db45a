//! Joins a call: `cargo run -p huddle-client --example join -- URL TOKEN ROOM [SECONDS]`
//! (e.g. `ws://127.0.0.1:8080/v1/ws` and a token from `huddle token --dev --room ROOM
//! --identity bot`). Publishes a speech-like signal as Opus and a moving test pattern as
//! H.264 (320x240, 15 fps), receives everyone else in the room, and prints each second
//! what it receives: packets, loss, concealment, decoded pictures. Open the web demo in
//! the same room to see and hear it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_client::media::{
    MediaEvent, MediaOptions, MediaSession, RemoteMedia, RemoteTrack, TrackKind,
};
use huddle_client::{Client, Config};
use huddle_media::codec::i420::I420Frame;
use huddle_media::quality::signal::{moving_pattern, speech_like};

/// A received track and how many decoded frames came out of it.
type Received = (RemoteTrack, Arc<Mutex<u64>>);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token), Some(room)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: join URL TOKEN ROOM [SECONDS]");
    };
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);

    let (client, mut signalling) = Client::connect(Config::new(url, token)).await?;
    tokio::spawn(async move { while signalling.recv().await.is_some() {} });
    client.join(Some(&room)).await?;
    // The server's STUN/TURN servers, as the web demo uses them: a network that blocks
    // UDP to the SFU still gets through its TURN.
    let opts = MediaOptions {
        ice_servers: client.ice_servers().await?,
        ..MediaOptions::default()
    };
    let (mut session, mut events) = MediaSession::start(&client, opts).await?;
    println!("in the call as {}", session.sid());

    // The microphone: 20 ms frames of a speech-like signal, in real time.
    let mic = session.take_audio().expect("audio is published");
    tokio::spawn(mic.send_looped(speech_like(10.0, 48_000, 12_000, 1)));
    // The camera: a moving pattern at 15 fps.
    let mut camera = session.take_video().expect("video is published");
    tokio::spawn(async move {
        let mut picture = I420Frame::new(320, 240).expect("valid size");
        let mut tick = tokio::time::interval(Duration::from_millis(66));
        for i in 0.. {
            let at = tick.tick().await.into_std();
            moving_pattern(&mut picture, i);
            if camera.send(&picture, at).await.is_err() {
                break;
            }
        }
    });

    // Received tracks: count what comes out of their decoders.
    let tracks: Arc<Mutex<Vec<Received>>> = Arc::default();
    let collector = tracks.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                MediaEvent::Connected => println!("media connected"),
                MediaEvent::TrackPaused {
                    track,
                    paused,
                    reason,
                } => {
                    if paused {
                        println!("{track} paused ({reason})");
                    } else {
                        println!("{track} resumed");
                    }
                }
                MediaEvent::TrackRefused { kind, message, .. } => {
                    println!("our {kind} is not forwarded: {message}");
                }
                MediaEvent::Left { reason } => {
                    println!("media session ended: {reason}");
                    break;
                }
                MediaEvent::Track(mut track) => {
                    println!("receiving {:?} of {}", track.kind, track.publisher);
                    let frames = Arc::new(Mutex::new(0u64));
                    let counter = frames.clone();
                    match track.media.take() {
                        Some(RemoteMedia::Audio(mut rx)) => {
                            tokio::spawn(async move {
                                while rx.recv().await.is_some() {
                                    *counter.lock().unwrap() += 1;
                                }
                            });
                        }
                        Some(RemoteMedia::Video(mut rx)) => {
                            tokio::spawn(async move {
                                while rx.recv().await.is_some() {
                                    *counter.lock().unwrap() += 1;
                                }
                            });
                        }
                        None => {}
                    }
                    collector.lock().unwrap().push((track, frames));
                }
            }
        }
    });

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut last: HashMap<String, u64> = HashMap::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (track, frames) in tracks.lock().unwrap().iter() {
            let s = track.stats();
            let n = *frames.lock().unwrap();
            let per_second = n - last.insert(track.track_id.clone(), n).unwrap_or(0);
            let what = match track.kind {
                TrackKind::Audio => format!(
                    "{per_second} frames/s played, {:.1}% concealed",
                    s.audio.as_ref().map_or(0.0, |a| a.concealed_percent())
                ),
                TrackKind::Video => format!("{per_second} pictures/s decoded"),
            };
            println!(
                "{} {:?}: {} packets, {} lost, {what}",
                track.publisher,
                track.kind,
                s.packets_received,
                s.packets_lost()
            );
        }
    }
    session.leave().await?;
    client.close().await;
    Ok(())
}
