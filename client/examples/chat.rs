//! A terminal chat client: `cargo run -p huddle-client --example chat -- URL TOKEN ROOM`
//! (e.g. `ws://127.0.0.1:8080/v1/ws`, a token from `huddle token --dev --room ROOM
//! --identity alice`). Lines typed are sent to the room's chat; messages are printed as
//! they arrive, after a history of the last 20.

use huddle_client::{Client, Config, Event};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token), Some(room)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: chat URL TOKEN ROOM");
    };
    let conversation = format!("room:{room}");
    let device = format!("terminal-{}", std::process::id());
    let (client, mut events) = Client::connect(Config::new(url, token).device(device)).await?;
    client.join(Some(&room)).await?;
    for m in client
        .history(&conversation, None, None, 20)
        .await?
        .messages
    {
        println!("[{}] {}: {}", m.seq, m.sender, m.text.unwrap_or_default());
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(text) if !text.trim().is_empty() => {
                    let ack = client.send_chat(&conversation, text.trim()).await?;
                    eprintln!("(stored as seq {})", ack.seq);
                }
                Some(_) => {}
                None => break,
            },
            ev = events.recv() => match ev {
                Some(Event::ChatMessage(m)) if m.sender != client.identity() => {
                    println!("[{}] {}: {}", m.seq, m.sender, m.text.unwrap_or_default());
                }
                Some(Event::Disconnected) => eprintln!("(connection lost, reconnecting)"),
                Some(_) => {}
                None => break,
            },
        }
    }
    client.close().await;
    Ok(())
}
