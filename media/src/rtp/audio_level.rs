//! Client-to-mixer audio level header extension (RFC 6464): a voice-activity flag and
//! the packet's audio level in -dBov, carried in the one-byte (or two-byte) header
//! extension form of RFC 8285; written by senders, read by the SFU for active speaker.

/// URI negotiated in SDP `a=extmap` for this extension (RFC 6464 §4).
pub const URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Header extension profile of the one-byte form (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xbede;

/// Quietest level: -127 dBov, also used for digital silence (RFC 6464 §3).
pub const SILENCE: u8 = 127;

/// Why an audio level could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioLevelError {
    /// A level above 127 (-dBov has 7 bits).
    #[error("audio level {0} out of range 0..=127")]
    LevelOutOfRange(u8),
    /// An extension id outside 1..=14 (RFC 8285 §4.2).
    #[error("one-byte extension id {0} out of range 1..=14")]
    BadId(u8),
    /// The element with our id does not hold exactly one byte (RFC 6464 §4).
    #[error("audio level element of {0} bytes")]
    BadLength(usize),
    /// An element runs past the end of the extension block.
    #[error("header extension element truncated")]
    Truncated,
    /// The output buffer cannot hold the extension block.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// One audio level indication (RFC 6464 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The sender's voice activity detector found speech in this packet.
    pub voice: bool,
    /// Level in -dBov: 0 is the loudest (overload), 127 the quietest.
    level: u8,
}

impl AudioLevel {
    /// A level of `level` -dBov (0..=127).
    pub fn new(level: u8, voice: bool) -> Result<Self, AudioLevelError> {
        if level > SILENCE {
            return Err(AudioLevelError::LevelOutOfRange(level));
        }
        Ok(Self { voice, level })
    }

    /// Measures the level of 16-bit PCM (RFC 6464 §3, RFC 6465 §4.1): the RMS relative to
    /// full scale, so that a full-scale square wave is 0 dBov and a full-scale sine -3.
    pub fn from_pcm(samples: &[i16], voice: bool) -> Self {
        Self {
            voice,
            level: level_from_pcm(samples),
        }
    }

    /// Level in -dBov.
    pub fn level(self) -> u8 {
        self.level
    }

    /// The extension's one data byte: V bit then 7 bits of level (RFC 6464 §3).
    pub fn to_byte(self) -> u8 {
        u8::from(self.voice) << 7 | self.level
    }

    /// Reads the extension's data byte; every value is valid.
    pub fn from_byte(byte: u8) -> Self {
        Self {
            voice: byte & 0x80 != 0,
            level: byte & 0x7f,
        }
    }

    /// Reads the element data as an RTP library hands it over (exactly one byte).
    pub fn from_element(data: &[u8]) -> Result<Self, AudioLevelError> {
        match data {
            [byte] => Ok(Self::from_byte(*byte)),
            other => Err(AudioLevelError::BadLength(other.len())),
        }
    }
}

/// The level of 16-bit PCM in -dBov (0..=127), 127 for digital silence.
pub fn level_from_pcm(samples: &[i16]) -> u8 {
    if samples.is_empty() {
        return SILENCE;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let mean_square = energy / samples.len() as f64 / (32_768.0 * 32_768.0);
    if mean_square <= 0.0 {
        return SILENCE;
    }
    let dbov = 10.0 * mean_square.log10();
    (-dbov).round().clamp(0.0, f64::from(SILENCE)) as u8
}

/// Writes a complete one-byte-form header extension block (RFC 8285 §4.2) holding only
/// the audio level: profile, length in words, the element, padding. Returns its size
/// (8 bytes). RTP stacks that build the block themselves need only [`AudioLevel::to_byte`].
pub fn write_extension_block(
    id: u8,
    level: AudioLevel,
    out: &mut [u8],
) -> Result<usize, AudioLevelError> {
    if !(1..=14).contains(&id) {
        return Err(AudioLevelError::BadId(id));
    }
    let block = [0xbe, 0xde, 0, 1, id << 4, level.to_byte(), 0, 0];
    out.get_mut(..block.len())
        .ok_or(AudioLevelError::BufferTooSmall)?
        .copy_from_slice(&block);
    Ok(block.len())
}

/// Finds the audio level with extension `id` in a header extension block's data (after
/// its profile and length words), in the one-byte form (profile 0xBEDE) or the two-byte
/// form (profile 0x100X, RFC 8285 §4.3). `Ok(None)` when absent or another profile.
pub fn read_extension_block(
    profile: u16,
    data: &[u8],
    id: u8,
) -> Result<Option<AudioLevel>, AudioLevelError> {
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != ONE_BYTE_PROFILE && !two_byte {
        return Ok(None);
    }
    let mut rest = data;
    while let Some((&first, tail)) = rest.split_first() {
        if first == 0 {
            // Padding between elements (RFC 8285 §4.2, §4.3).
            rest = tail;
            continue;
        }
        let (element_id, len, tail) = if two_byte {
            let (&len, tail) = tail.split_first().ok_or(AudioLevelError::Truncated)?;
            (first, usize::from(len), tail)
        } else {
            let element_id = first >> 4;
            if element_id == 15 {
                // Reserved id: stop parsing the block (RFC 8285 §4.2).
                return Ok(None);
            }
            (element_id, usize::from(first & 0x0f) + 1, tail)
        };
        let value = tail.get(..len).ok_or(AudioLevelError::Truncated)?;
        if element_id == id {
            return AudioLevel::from_element(value).map(Some);
        }
        rest = &tail[len..];
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pcm_levels_match_the_dbov_definition() {
        // Full-scale square wave: 0 dBov; full-scale sine: -3 dBov (RFC 6464 Appendix A).
        let square: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert_eq!(level_from_pcm(&square), 0);
        let sine: Vec<i16> = (0..960)
            .map(|i| (32_767.0 * (i as f64 * 0.1).sin()) as i16)
            .collect();
        assert_eq!(level_from_pcm(&sine), 3);
        // A sine at a tenth of full scale: -23 dBov.
        let quiet: Vec<i16> = sine.iter().map(|&s| s / 10).collect();
        assert_eq!(level_from_pcm(&quiet), 23);
        assert_eq!(level_from_pcm(&[0; 480]), SILENCE);
        assert_eq!(level_from_pcm(&[]), SILENCE);
        // One LSB of alternating noise is -90 dBov.
        assert_eq!(level_from_pcm(&[1, -1, 1, -1]), 90);
    }

    #[test]
    fn byte_form() {
        let l = AudioLevel::new(42, true).unwrap();
        assert_eq!(l.to_byte(), 0x80 | 42);
        assert_eq!(AudioLevel::from_byte(0xaa), l);
        assert_eq!(
            AudioLevel::new(128, false),
            Err(AudioLevelError::LevelOutOfRange(128))
        );
        assert_eq!(
            AudioLevel::from_element(&[1, 2]),
            Err(AudioLevelError::BadLength(2))
        );
    }

    #[test]
    fn one_byte_block_round_trip_and_errors() {
        let level = AudioLevel::new(30, false).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(write_extension_block(3, level, &mut buf), Ok(8));
        assert_eq!(buf, [0xbe, 0xde, 0, 1, 0x30, 30, 0, 0]);
        assert_eq!(read_extension_block(0xbede, &buf[4..], 3), Ok(Some(level)));
        assert_eq!(read_extension_block(0xbede, &buf[4..], 4), Ok(None));
        assert_eq!(
            write_extension_block(15, level, &mut buf),
            Err(AudioLevelError::BadId(15))
        );
        assert_eq!(
            write_extension_block(1, level, &mut [0; 7]),
            Err(AudioLevelError::BufferTooSmall)
        );
        // Another element (id 1, 3 bytes) first, then ours.
        let data = [0x12, 9, 9, 9, 0x50, 0x85, 0, 0];
        assert_eq!(
            read_extension_block(0xbede, &data, 5),
            Ok(Some(AudioLevel::new(5, true).unwrap()))
        );
        assert_eq!(
            read_extension_block(0xbede, &[0x12, 9], 5),
            Err(AudioLevelError::Truncated)
        );
        // Our id with two bytes of data.
        assert_eq!(
            read_extension_block(0xbede, &[0x51, 1, 2, 0], 5),
            Err(AudioLevelError::BadLength(2))
        );
        // Id 15 ends parsing.
        assert_eq!(read_extension_block(0xbede, &[0xf0, 0x50, 1], 5), Ok(None));
    }

    #[test]
    fn two_byte_form() {
        let data = [7, 2, 1, 1, 0, 5, 1, 0x8a];
        assert_eq!(
            read_extension_block(0x1000, &data, 5),
            Ok(Some(AudioLevel::new(10, true).unwrap()))
        );
        assert_eq!(
            read_extension_block(0x1000, &[5, 3, 1], 5),
            Err(AudioLevelError::Truncated)
        );
        assert_eq!(read_extension_block(0x1234, &data, 5), Ok(None));
    }

    proptest! {
        #[test]
        fn arbitrary_blocks_never_panic(profile in prop_oneof![Just(0xbedeu16), Just(0x1000u16), any::<u16>()], data in proptest::collection::vec(any::<u8>(), 0..64), id in 1u8..15) {
            if let Ok(Some(level)) = read_extension_block(profile, &data, id) {
                prop_assert!(level.level() <= SILENCE);
            }
        }

        #[test]
        fn level_is_monotonic_in_amplitude(amplitude in 1i16..i16::MAX, factor in 2i16..100) {
            let loud = [amplitude, -amplitude];
            let quiet = [amplitude / factor, -(amplitude / factor)];
            prop_assert!(level_from_pcm(&quiet) >= level_from_pcm(&loud));
        }
    }
}
