//! Speech from a WAV file for `huddle bench call --wav`.

use std::path::Path;

use crate::{BenchError, Result};

/// Longest file accepted: ten minutes at 48 kHz.
const MAX_SAMPLES: usize = 48_000 * 600;

/// Reads a 48 kHz, 16-bit PCM WAV file; of several channels the first is used.
pub fn read_speech(path: &Path) -> Result<Vec<i16>> {
    let bad = |m: String| BenchError::Protocol(format!("{}: {m}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != 48_000
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(bad(format!(
            "need 48000 Hz 16-bit PCM, found {} Hz {}-bit {:?}",
            spec.sample_rate, spec.bits_per_sample, spec.sample_format
        )));
    }
    let channels = usize::from(spec.channels.max(1));
    let mut out = Vec::new();
    for (i, s) in reader.samples::<i16>().enumerate() {
        let s = s.map_err(|e| bad(e.to_string()))?;
        if i % channels == 0 {
            out.push(s);
        }
        if out.len() > MAX_SAMPLES {
            return Err(bad("longer than ten minutes".into()));
        }
    }
    if out.len() < 48_000 {
        return Err(bad("shorter than one second".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn reads_the_first_channel_and_refuses_other_rates() {
        let dir = std::env::temp_dir().join(format!("huddle-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stereo: Vec<i16> = (0..96_000)
            .map(|i| if i % 2 == 0 { 7 } else { -7 })
            .collect();
        let p = dir.join("stereo.wav");
        write(&p, 48_000, 2, &stereo);
        let s = read_speech(&p).unwrap();
        assert_eq!(s.len(), 48_000);
        assert!(s.iter().all(|&x| x == 7));
        let p = dir.join("slow.wav");
        write(&p, 16_000, 1, &vec![0; 32_000]);
        let err = read_speech(&p).unwrap_err().to_string();
        assert!(err.contains("48000"), "{err}");
        let p = dir.join("junk.wav");
        std::fs::write(&p, b"not a wav file").unwrap();
        assert!(read_speech(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
