//! Active speaker detection for one room from RFC 6464 client-to-mixer audio levels:
//! each participant's level is smoothed exponentially, and the room's speaker changes
//! only to a participant above the speaking threshold who is clearly louder.

use std::collections::HashMap;
use std::time::Instant;

use crate::config::SpeakerConfig;
use crate::ids::ParticipantId;

/// Quietest level of RFC 6464 §3 (-127 dBov), also digital silence.
const SILENCE_DBOV: u8 = 127;

/// One participant's smoothed loudness.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Smoothed loudness in dB above -127 dBov (0 = silence, 127 = full scale), so that
    /// "louder" is "greater".
    loudness: f32,
    /// When the last level arrived; a stale level counts as silence.
    last: Instant,
}

/// The room's active speaker, fed with levels and evaluated on a timer.
#[derive(Debug)]
pub struct SpeakerDetector {
    /// Smoothing, threshold, hysteresis and timing.
    config: SpeakerConfig,
    /// Participants heard recently; entries go stale and are removed.
    levels: HashMap<ParticipantId, Level>,
    /// The current speaker; kept while everyone is silent (the last one who spoke).
    current: Option<ParticipantId>,
    /// When the next evaluation is due; none while nobody is heard.
    next_eval: Option<Instant>,
}

impl SpeakerDetector {
    /// A detector with no speaker.
    pub fn new(config: SpeakerConfig) -> Self {
        Self {
            config,
            levels: HashMap::new(),
            current: None,
            next_eval: None,
        }
    }

    /// The current speaker.
    pub fn current(&self) -> Option<&ParticipantId> {
        self.current.as_ref()
    }

    /// Feeds one packet's level in -dBov (RFC 6464 §3: 0 loudest, 127 silence).
    pub fn observe(&mut self, participant: &ParticipantId, dbov: u8, now: Instant) {
        let loudness = f32::from(SILENCE_DBOV - dbov.min(SILENCE_DBOV));
        let tau = self.config.smoothing.as_secs_f32().max(1e-3);
        match self.levels.get_mut(participant) {
            Some(level) => {
                // alpha from the real gap keeps the time constant independent of the
                // packet rate (10, 20 or 60 ms Opus frames).
                let dt = now.saturating_duration_since(level.last).as_secs_f32();
                let alpha = 1.0 - (-dt / tau).exp();
                level.loudness += alpha * (loudness - level.loudness);
                level.last = now;
            }
            None => {
                self.levels.insert(
                    participant.clone(),
                    Level {
                        loudness,
                        last: now,
                    },
                );
            }
        }
        if self.next_eval.is_none() {
            self.next_eval = Some(now + self.config.interval);
        }
    }

    /// Forgets a participant (left, or its audio track went away). Returns true when it
    /// was the current speaker, which is then cleared.
    pub fn remove(&mut self, participant: &ParticipantId) -> bool {
        self.levels.remove(participant);
        if self.current.as_ref() == Some(participant) {
            self.current = None;
            return true;
        }
        false
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_eval
    }

    /// Re-evaluates the speaker if due. Returns the new speaker when it changed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ParticipantId> {
        let due = self.next_eval.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        let stale = self.config.stale_after;
        self.levels
            .retain(|_, l| now.saturating_duration_since(l.last) < stale);
        self.next_eval = if self.levels.is_empty() {
            None
        } else {
            Some(now + self.config.interval)
        };

        let threshold = f32::from(SILENCE_DBOV - self.config.threshold_dbov.min(SILENCE_DBOV));
        let loudest = self
            .levels
            .iter()
            .filter(|(_, l)| l.loudness >= threshold)
            .max_by(|a, b| a.1.loudness.total_cmp(&b.1.loudness))
            .map(|(p, l)| (p.clone(), l.loudness));
        let (candidate, loudness) = loudest?;
        if self.current.as_ref() == Some(&candidate) {
            return None;
        }
        let current_loudness = self
            .current
            .as_ref()
            .and_then(|c| self.levels.get(c))
            .map(|l| l.loudness)
            .filter(|&l| l >= threshold);
        let takes_over = match current_loudness {
            Some(current) => loudness >= current + self.config.hysteresis_db,
            None => true,
        };
        if takes_over {
            self.current = Some(candidate.clone());
            return Some(candidate);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PACKET: Duration = Duration::from_millis(20);

    /// Feeds `ms` of 20 ms packets for every (participant, level) pair and runs timers.
    fn talk(
        d: &mut SpeakerDetector,
        now: &mut Instant,
        ms: u64,
        who: &[(&ParticipantId, u8)],
    ) -> Vec<ParticipantId> {
        let mut changes = Vec::new();
        for _ in 0..ms / 20 {
            *now += PACKET;
            for (p, level) in who {
                d.observe(p, *level, *now);
            }
            if let Some(c) = d.handle_timeout(*now) {
                changes.push(c);
            }
        }
        changes
    }

    #[test]
    fn loudest_participant_becomes_speaker_and_speaker_follows() {
        let (a, b) = (ParticipantId::from("a"), ParticipantId::from("b"));
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut now = Instant::now();
        let changes = talk(&mut d, &mut now, 1000, &[(&a, 20), (&b, 50)]);
        assert_eq!(changes, vec![a.clone()]);
        // b gets loud, a quiet: the speaker moves once.
        let changes = talk(&mut d, &mut now, 1500, &[(&a, 90), (&b, 15)]);
        assert_eq!(changes, vec![b.clone()]);
        assert_eq!(d.current(), Some(&b));
    }

    #[test]
    fn hysteresis_keeps_speaker_against_a_similar_voice() {
        let (a, b) = (ParticipantId::from("a"), ParticipantId::from("b"));
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut now = Instant::now();
        talk(&mut d, &mut now, 1000, &[(&a, 30)]);
        assert_eq!(d.current(), Some(&a));
        // b is 1 dB louder than a: not enough to take over (3 dB hysteresis).
        let changes = talk(&mut d, &mut now, 2000, &[(&a, 30), (&b, 29)]);
        assert!(changes.is_empty(), "{changes:?}");
        // 10 dB louder takes over.
        let changes = talk(&mut d, &mut now, 2000, &[(&a, 30), (&b, 20)]);
        assert_eq!(changes, vec![b]);
    }

    #[test]
    fn quiet_participants_never_become_speaker() {
        let a = ParticipantId::from("a");
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut now = Instant::now();
        let changes = talk(&mut d, &mut now, 2000, &[(&a, 100)]);
        assert!(changes.is_empty());
        assert_eq!(d.current(), None);
    }

    #[test]
    fn a_single_loud_packet_is_smoothed_away() {
        let (a, b) = (ParticipantId::from("a"), ParticipantId::from("b"));
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut now = Instant::now();
        talk(&mut d, &mut now, 1000, &[(&a, 30), (&b, 110)]);
        assert_eq!(d.current(), Some(&a));
        // One full-scale packet from b among quiet ones.
        now += PACKET;
        d.observe(&b, 0, now);
        let changes = talk(&mut d, &mut now, 1000, &[(&a, 30), (&b, 110)]);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn stale_levels_are_dropped_and_timer_stops() {
        let a = ParticipantId::from("a");
        let mut d = SpeakerDetector::new(SpeakerConfig::default());
        let mut now = Instant::now();
        talk(&mut d, &mut now, 400, &[(&a, 20)]);
        assert_eq!(d.current(), Some(&a));
        // Silence (no packets): after stale_after the level is gone and no timer remains,
        // but the last speaker stays the speaker.
        for _ in 0..10 {
            now += Duration::from_millis(300);
            d.handle_timeout(now);
        }
        assert!(d.levels.is_empty());
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.current(), Some(&a));
        assert!(d.remove(&a));
        assert_eq!(d.current(), None);
    }
}
