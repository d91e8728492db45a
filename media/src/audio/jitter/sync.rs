//! Decoded audio waiting to be played out, and the splicing that keeps the waveform
//! continuous where blocks from different sources (decoder, concealment, comfort noise,
//! silence) meet.

/// Interleaved samples not yet played, plus the last two played-or-queued frames.
#[derive(Debug, Clone)]
pub(crate) struct SyncBuffer {
    /// Queued samples; those before `pos` have been played.
    pcm: Vec<i16>,
    /// Read position in `pcm`.
    pos: usize,
    channels: usize,
    /// Last queued frame and the one before, to predict how the waveform continues.
    last: Vec<i16>,
    prev: Vec<i16>,
    /// Frames over which a discontinuity is ramped out.
    ramp: usize,
}

impl SyncBuffer {
    pub(crate) fn new(channels: usize, ramp_frames: usize, capacity: usize) -> Self {
        Self {
            pcm: Vec::with_capacity(capacity),
            pos: 0,
            channels,
            last: vec![0; channels],
            prev: vec![0; channels],
            ramp: ramp_frames.max(1),
        }
    }

    /// Frames queued and not yet played.
    pub(crate) fn pending_frames(&self) -> usize {
        (self.pcm.len() - self.pos) / self.channels
    }

    /// The last queued frame (or the last played one when nothing is queued).
    #[cfg(test)]
    pub(crate) fn last_frame(&self) -> &[i16] {
        &self.last
    }

    /// Queues `block`; with `splice`, first bends its start onto the waveform's predicted
    /// continuation so that a change of source makes no step (the offset decays linearly).
    pub(crate) fn append(&mut self, block: &mut [i16], splice: bool) {
        let ch = self.channels;
        let frames = block.len() / ch;
        if frames == 0 {
            return;
        }
        if splice {
            let n = self.ramp.min(frames);
            for c in 0..ch {
                let predicted = 2 * i32::from(self.last[c]) - i32::from(self.prev[c]);
                let predicted = predicted.clamp(-32768, 32767);
                let offset = (predicted - i32::from(block[c])) as f32;
                for i in 0..n {
                    let k = i * ch + c;
                    let w = 1.0 - i as f32 / n as f32;
                    let v = f32::from(block[k]) + offset * w;
                    block[k] = v.round().clamp(-32768.0, 32767.0) as i16;
                }
            }
        }
        self.pcm.extend_from_slice(&block[..frames * ch]);
        self.refresh_tail();
    }

    /// Queues `frames` of silence, spliced onto what came before.
    pub(crate) fn append_silence(&mut self, frames: usize, splice: bool, scratch: &mut Vec<i16>) {
        scratch.clear();
        scratch.resize(frames * self.channels, 0);
        self.append(scratch, splice);
    }

    /// Queued samples with the offset of the first unplayed one, for in-place time
    /// stretching. Call [`SyncBuffer::refresh_tail`] after changing them.
    pub(crate) fn unplayed_mut(&mut self) -> (&mut Vec<i16>, usize) {
        (&mut self.pcm, self.pos)
    }

    /// Re-reads the last two frames after the queue was edited.
    pub(crate) fn refresh_tail(&mut self) {
        let ch = self.channels;
        let len = self.pcm.len();
        if len >= 2 * ch {
            self.prev.copy_from_slice(&self.pcm[len - 2 * ch..len - ch]);
            self.last.copy_from_slice(&self.pcm[len - ch..]);
        } else if len >= ch {
            self.prev.copy_from_slice(&self.last);
            self.last.copy_from_slice(&self.pcm[len - ch..]);
        }
    }

    /// Moves the next `frames` into `out` (replacing its contents).
    pub(crate) fn take(&mut self, frames: usize, out: &mut Vec<i16>) {
        let n = (frames * self.channels).min(self.pcm.len() - self.pos);
        out.clear();
        out.extend_from_slice(&self.pcm[self.pos..self.pos + n]);
        self.pos += n;
        // Compact once the played part dominates, so the buffer stays small without
        // shifting on every pull.
        if self.pos * 2 >= self.pcm.len() {
            self.pcm.drain(..self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_bends_a_step_into_a_ramp() {
        let mut s = SyncBuffer::new(1, 4, 64);
        s.append(&mut [100, 200, 300], false);
        let mut block = [0i16; 6];
        s.append(&mut block, true);
        let mut out = Vec::new();
        s.take(9, &mut out);
        // Continues the slope (400), then decays to the block's own values.
        assert_eq!(out, vec![100, 200, 300, 400, 300, 200, 100, 0, 0]);
    }

    #[test]
    fn take_plays_in_order_across_compaction() {
        let mut s = SyncBuffer::new(2, 1, 8);
        let mut out = Vec::new();
        let mut next = 0i16;
        let mut want = 0i16;
        for _ in 0..50 {
            let mut block: Vec<i16> = (0..6).map(|i| next + i).collect();
            next += 6;
            s.append(&mut block, false);
            s.take(2, &mut out);
            for &v in &out {
                assert_eq!(v, want);
                want += 1;
            }
        }
        assert_eq!(s.pending_frames(), 50);
        assert_eq!(s.last_frame(), &[next - 2, next - 1]);
    }
}
