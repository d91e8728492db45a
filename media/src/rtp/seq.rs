//! Sequence number unwrapping: 16-bit RTP sequence numbers to a monotonic 64-bit space.

/// Extends 16-bit RTP sequence numbers to 64 bits by choosing, for each new value, the
/// candidate nearest to the last one (RFC 3550 §A.1 uses the same half-range rule).
#[derive(Debug, Clone, Default)]
pub struct SeqUnwrapper {
    /// Last unwrapped value; `None` until the first packet.
    last: Option<u64>,
}

/// Where the first sequence number is placed, so that packets older than it by up to
/// 2^32 wraps still have a non-negative unwrapped value.
const ORIGIN: u64 = 1 << 48;

impl SeqUnwrapper {
    /// A fresh unwrapper.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwraps `seq` relative to the last value seen and remembers the result when it
    /// is newer, so a late packet does not pull the reference backwards.
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let value = self.peek(seq);
        if self.last.is_none_or(|last| value > last) {
            self.last = Some(value);
        }
        value
    }

    /// Unwraps `seq` without changing the reference.
    pub fn peek(&self, seq: u16) -> u64 {
        match self.last {
            None => ORIGIN + u64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last.saturating_add_signed(delta)
            }
        }
    }

    /// The newest unwrapped value so far.
    pub fn last(&self) -> Option<u64> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_forward_and_backward() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65_534);
        let b = u.unwrap(65_535);
        let c = u.unwrap(0);
        let d = u.unwrap(1);
        assert_eq!([b - a, c - b, d - c], [1, 1, 1]);
        // A late packet from before the wrap maps below, and does not move the reference.
        assert_eq!(u.unwrap(65_535), b);
        assert_eq!(u.unwrap(2), d + 1);
    }

    proptest! {
        #[test]
        fn unwrapped_steps_match_wrapped_steps(start: u16, steps in proptest::collection::vec(-1000i16..1000, 1..200)) {
            let mut u = SeqUnwrapper::new();
            let mut seq = start;
            let mut expected = u.unwrap(seq) as i64;
            let mut max = expected;
            for step in steps {
                seq = seq.wrapping_add(step as u16);
                expected += i64::from(step);
                // Steps smaller than half the range relative to the newest value are exact.
                if (expected - max).abs() < 30_000 {
                    let got = u.unwrap(seq) as i64;
                    prop_assert_eq!(got, expected);
                    max = max.max(got);
                } else {
                    break;
                }
            }
        }
    }
}
