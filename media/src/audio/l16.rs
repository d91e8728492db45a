//! 16-bit linear PCM (L16, RFC 3551 §4.5.11): big-endian samples, no compression. A codec
//! for LAN links and a transparent one for exercising the playout path. Its loss
//! concealment repeats the last pitch period, after ITU-T G.711 Appendix I.

use super::decoder::{AudioDecoder, DecodeError};
use super::jitter::stretch::{Period, PeriodFinder};

/// History kept for concealment: two of the longest pitch periods looked for.
const HISTORY_MS: usize = 30;

/// Encodes interleaved PCM as an L16 payload (network byte order, RFC 3551 §4.5.11).
pub fn encode_l16(pcm: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend(pcm.iter().flat_map(|s| s.to_be_bytes()));
}

/// L16 decoder with pitch-repetition concealment. It does not fade: the jitter buffer
/// fades long concealment itself.
#[derive(Debug, Clone)]
pub struct L16Decoder {
    rate: u32,
    channels: usize,
    /// The last `HISTORY_MS` of decoded audio, interleaved.
    history: Vec<i16>,
    history_frames: usize,
    /// Concealment in progress: the repeated period in frames and the position in it.
    period: Option<usize>,
    phase: usize,
    finder: PeriodFinder,
}

impl L16Decoder {
    /// A decoder for `rate` Hz and `channels` interleaved channels (both at least 1).
    pub fn new(rate: u32, channels: usize) -> Self {
        let rate = rate.max(1);
        let channels = channels.max(1);
        let history_frames = (rate as usize * HISTORY_MS / 1000).max(1);
        Self {
            rate,
            channels,
            history: Vec::with_capacity(history_frames * channels),
            history_frames,
            period: None,
            phase: 0,
            finder: PeriodFinder::default(),
        }
    }

    fn frames_in(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        let unit = 2 * self.channels;
        if !payload.len().is_multiple_of(unit) {
            return Err(DecodeError::Malformed(format!(
                "{} bytes is not a whole number of {}-byte frames",
                payload.len(),
                unit
            )));
        }
        Ok(payload.len() / unit)
    }

    fn check_out(&self, frames: usize, out: &[i16]) -> Result<(), DecodeError> {
        let need = frames * self.channels;
        if out.len() < need {
            return Err(DecodeError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        Ok(())
    }
}

impl AudioDecoder for L16Decoder {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        self.frames_in(payload)
    }

    fn has_fec(&self, _payload: &[u8]) -> bool {
        false
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        let frames = self.frames_in(payload)?;
        self.check_out(frames, out)?;
        for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
            *o = i16::from_be_bytes([b[0], b[1]]);
        }
        let n = frames * self.channels;
        self.history.extend_from_slice(&out[..n]);
        let keep = self.history_frames * self.channels;
        if self.history.len() > keep {
            self.history.drain(..self.history.len() - keep);
        }
        self.period = None;
        Ok(frames)
    }

    fn decode_fec(
        &mut self,
        _payload: &[u8],
        _samples: usize,
        _out: &mut [i16],
    ) -> Result<usize, DecodeError> {
        Err(DecodeError::Codec("L16 carries no FEC".into()))
    }

    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.check_out(samples, out)?;
        let ch = self.channels;
        let have = self.history.len() / ch;
        if have == 0 {
            out[..samples * ch].fill(0);
            return Ok(samples);
        }
        let period = match self.period {
            Some(p) => p,
            None => {
                // Voiced audio repeats its period seamlessly; anything else repeats the
                // whole history, which at least keeps its spectrum.
                let p = match self.finder.analyse(&self.history, ch, self.rate) {
                    Period::Voiced { frames, .. } => frames,
                    Period::Silence | Period::Unsuitable => have,
                };
                self.period = Some(p);
                self.phase = 0;
                p
            }
        };
        let base = have - period;
        for i in 0..samples {
            let src = (base + (self.phase + i) % period) * ch;
            out[i * ch..(i + 1) * ch].copy_from_slice(&self.history[src..src + ch]);
        }
        self.phase = (self.phase + samples) % period;
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_big_endian_samples() {
        let pcm = [0i16, 1, -1, 32767, -32768, 258];
        let mut payload = Vec::new();
        encode_l16(&pcm, &mut payload);
        assert_eq!(&payload[..4], &[0, 0, 0, 1]);
        let mut d = L16Decoder::new(8000, 2);
        assert_eq!(d.packet_samples(&payload), Ok(3));
        let mut out = [0i16; 6];
        assert_eq!(d.decode(&payload, &mut out), Ok(3));
        assert_eq!(out, pcm);
    }

    #[test]
    fn rejects_partial_frames_and_small_buffers() {
        let mut d = L16Decoder::new(8000, 2);
        assert!(matches!(
            d.decode(&[0; 6], &mut [0; 8]),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            d.decode(&[0; 8], &mut [0; 3]),
            Err(DecodeError::BufferTooSmall { need: 4, have: 3 })
        );
        assert!(d.conceal(10, &mut [0; 19]).is_err());
    }

    #[test]
    fn concealment_continues_a_tone_smoothly() {
        let rate = 16_000;
        let tone: Vec<i16> = (0..640)
            .map(|i| {
                (8000.0 * (2.0 * std::f32::consts::PI * 200.0 * i as f32 / rate as f32).sin())
                    as i16
            })
            .collect();
        let mut d = L16Decoder::new(rate, 1);
        let mut payload = Vec::new();
        encode_l16(&tone[..320], &mut payload);
        let mut out = vec![0i16; 320];
        d.decode(&payload, &mut out).unwrap();
        let mut concealed = vec![0i16; 320];
        d.conceal(160, &mut concealed[..160]).unwrap();
        d.conceal(160, &mut concealed[160..]).unwrap();
        // The concealment is the tone continued (period 80 samples), within rounding.
        for (i, (&c, &t)) in concealed.iter().zip(&tone[320..]).enumerate() {
            assert!(
                (i32::from(c) - i32::from(t)).abs() <= 40,
                "sample {i}: {c} vs {t}"
            );
        }
    }
}
