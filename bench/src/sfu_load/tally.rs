//! What one peer received: packets, frames per (sender, kind) stream, frames lost on the
//! way (gaps in the senders' frame numbers) and one-way latencies. Counted end to end
//! from the markers the senders wrote, so frames the SFU never forwarded are lost too
//! (its per-subscriber RTP sequence numbers would not show them).

use std::collections::HashMap;
use std::time::Instant;

use super::payload::Marker;
use super::stamp::Received;

/// Streams one peer tracks at most; a run has far fewer (room size × 2).
const MAX_STREAMS: usize = 4096;
/// Latency samples kept per peer and window; beyond it samples are counted, not kept.
const MAX_SAMPLES: usize = 1 << 20;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

#[derive(Debug, Default)]
struct Stream {
    /// Highest frame number seen.
    max_frame: u32,
    /// Frames received since the window began.
    in_window: u64,
}

/// When the datagram that completed a frame arrived, in µs since the run's epoch (the
/// clock of the markers' send times).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Queued on the socket (the kernel's stamp).
    pub socket_us: u64,
    /// Read by the participant.
    pub read_us: u64,
}

impl Arrival {
    /// Read at `t` with no stamp of its own (a frame from a TCP connection).
    pub fn read_at(t: Instant, epoch: Instant) -> Self {
        Self::at(t, t, epoch)
    }

    pub fn of(d: &Received, epoch: Instant) -> Self {
        Self::at(d.stamped, d.read, epoch)
    }

    fn at(stamped: Instant, read: Instant, epoch: Instant) -> Self {
        let us = |t: Instant| t.saturating_duration_since(epoch).as_micros() as u64;
        Self {
            socket_us: us(stamped),
            read_us: us(read),
        }
    }
}

/// One peer's receive statistics, shared with the run's coordinator.
#[derive(Debug, Default)]
pub struct Tally {
    streams: HashMap<(u32, Kind), Stream>,
    window: Window,
}

/// Counts over one measurement window (everything since the last [`Tally::take_window`]).
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// RTP packets that made up the frames received.
    pub packets: u64,
    pub frames_received: u64,
    /// Of `frames_received`, audio frames (one RTP packet each).
    pub audio_frames: u64,
    /// Frames the senders sent, as far as the received frame numbers tell: a stream
    /// expects every frame up to the highest one it saw.
    pub frames_expected: u64,
    /// Frames at or below a stream's highest number (duplicates): not counted received.
    pub stale_frames: u64,
    /// Frames without a marker, or of a stream beyond the limit.
    pub foreign_frames: u64,
    /// Arrival at the socket minus send time, in µs.
    pub latency_us: Vec<u32>,
    /// Read by the participant minus send time, in µs (adds the client's own delay).
    pub read_latency_us: Vec<u32>,
    /// Streams that delivered at least one frame in the window.
    pub streams_active: u64,
    /// Streams from `sender` ids that delivered a frame in the window (for checks).
    pub senders: Vec<(u32, Kind)>,
}

impl Window {
    /// Adds another peer's window to this one.
    pub fn merge(&mut self, mut o: Window) {
        self.packets += o.packets;
        self.frames_received += o.frames_received;
        self.audio_frames += o.audio_frames;
        self.frames_expected += o.frames_expected;
        self.stale_frames += o.stale_frames;
        self.foreign_frames += o.foreign_frames;
        self.streams_active += o.streams_active;
        self.latency_us.append(&mut o.latency_us);
        self.read_latency_us.append(&mut o.read_latency_us);
    }
}

impl Tally {
    /// Records one received frame of `packets` RTP packets, completed at `at`.
    pub fn frame(&mut self, kind: Kind, marker: Option<Marker>, packets: u64, at: Arrival) {
        let w = &mut self.window;
        w.packets += packets;
        let Some(m) = marker else {
            w.foreign_frames += 1;
            return;
        };
        let full = self.streams.len() >= MAX_STREAMS;
        let stream = match self.streams.get_mut(&(m.sender, kind)) {
            Some(s) => s,
            None if full => {
                w.foreign_frames += 1;
                return;
            }
            None => {
                // A new stream starts where we joined it: earlier frames are not ours.
                let s = self.streams.entry((m.sender, kind)).or_default();
                s.max_frame = m.frame.saturating_sub(1);
                s
            }
        };
        if m.frame <= stream.max_frame {
            w.stale_frames += 1;
            return;
        }
        w.frames_expected += u64::from(m.frame - stream.max_frame);
        stream.max_frame = m.frame;
        stream.in_window += 1;
        w.frames_received += 1;
        if kind == Kind::Audio {
            w.audio_frames += 1;
        }
        if w.latency_us.len() < MAX_SAMPLES {
            let since_sent =
                |t: u64| u32::try_from(t.saturating_sub(m.sent_us)).unwrap_or(u32::MAX);
            w.latency_us.push(since_sent(at.socket_us));
            w.read_latency_us.push(since_sent(at.read_us));
        }
    }

    /// Streams (sender, kind) that delivered anything since the last window.
    pub fn active_streams(&self) -> usize {
        self.streams.values().filter(|s| s.in_window > 0).count()
    }

    /// Whether `sender`'s `kind` stream delivered anything since the last window.
    pub fn is_active(&self, sender: u32, kind: Kind) -> bool {
        self.streams
            .get(&(sender, kind))
            .is_some_and(|s| s.in_window > 0)
    }

    /// Returns the window's counts and starts a new window.
    pub fn take_window(&mut self) -> Window {
        let mut w = std::mem::take(&mut self.window);
        for (key, s) in &mut self.streams {
            if s.in_window > 0 {
                w.streams_active += 1;
                w.senders.push(*key);
            }
            s.in_window = 0;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read 100 µs after it reached the socket at `us`.
    fn at(us: u64) -> Arrival {
        Arrival {
            socket_us: us,
            read_us: us + 100,
        }
    }

    fn m(sender: u32, frame: u32, sent_us: u64) -> Option<Marker> {
        Some(Marker {
            sender,
            frame,
            sent_us,
        })
    }

    #[test]
    fn gaps_count_as_lost_and_duplicates_do_not_count() {
        let mut t = Tally::default();
        t.frame(Kind::Audio, m(1, 10, 1000), 1, at(3000));
        t.frame(Kind::Audio, m(1, 11, 1000), 1, at(2000));
        t.frame(Kind::Audio, m(1, 14, 1000), 1, at(2000)); // 12, 13 lost
        t.frame(Kind::Audio, m(1, 14, 1000), 1, at(2000)); // duplicate
        t.frame(Kind::Video, m(2, 1, 1000), 6, at(1500));
        t.frame(Kind::Video, None, 6, at(1500));
        let w = t.take_window();
        assert_eq!(w.frames_received, 4);
        assert_eq!(w.audio_frames, 3);
        assert_eq!(w.frames_expected, 6);
        assert_eq!(w.stale_frames, 1);
        assert_eq!(w.foreign_frames, 1);
        assert_eq!(w.packets, 4 + 6 + 6);
        assert_eq!(w.streams_active, 2);
        let mut lat = w.latency_us.clone();
        lat.sort();
        assert_eq!(lat, vec![500, 1000, 1000, 2000]);
        let mut read = w.read_latency_us.clone();
        read.sort();
        assert_eq!(read, vec![600, 1100, 1100, 2100]);
    }

    #[test]
    fn windows_are_independent_and_streams_persist() {
        let mut t = Tally::default();
        t.frame(Kind::Audio, m(1, 1, 0), 1, at(10));
        t.frame(Kind::Audio, m(3, 1, 0), 1, at(10));
        let _ = t.take_window();
        assert_eq!(t.active_streams(), 0);
        t.frame(Kind::Audio, m(1, 3, 0), 1, at(10));
        let w = t.take_window();
        // Frame 2 was lost between the windows: it belongs to the window that saw the gap.
        assert_eq!((w.frames_received, w.frames_expected), (1, 2));
        assert_eq!(w.streams_active, 1);
        assert_eq!(w.senders, vec![(1, Kind::Audio)]);
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Window {
            packets: 1,
            frames_received: 2,
            frames_expected: 3,
            latency_us: vec![1],
            read_latency_us: vec![5],
            ..Window::default()
        };
        a.merge(Window {
            packets: 10,
            frames_received: 20,
            frames_expected: 30,
            streams_active: 4,
            latency_us: vec![2, 3],
            read_latency_us: vec![6],
            ..Window::default()
        });
        assert_eq!(
            (
                a.packets,
                a.frames_received,
                a.frames_expected,
                a.streams_active
            ),
            (11, 22, 33, 4)
        );
        assert_eq!(a.latency_us, vec![1, 2, 3]);
        assert_eq!(a.read_latency_us, vec![5, 6]);
    }
}
