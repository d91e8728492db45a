//! Annex-B byte streams (ITU-T H.264 Annex B): NAL units separated by start codes.

use super::H264Error;

/// The 4-byte start code written before every NAL unit of an output access unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Iterator over the NAL units of an Annex-B buffer; see [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    /// Bytes after the last start code found.
    rest: &'a [u8],
}

/// Splits an Annex-B access unit into NAL units (without start codes). The buffer must
/// begin with a start code (zero bytes before it are allowed); zero bytes that end a
/// NAL unit belong to the next start code or are trailing_zero_8bits and are dropped.
pub fn nal_units(data: &[u8]) -> Result<NalUnits<'_>, H264Error> {
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    if zeros < 2 || data.get(zeros) != Some(&1) {
        return Err(H264Error::NoStartCode);
    }
    Ok(NalUnits {
        rest: &data[zeros + 1..],
    })
}

/// Position of the next `00 00 01` in `data`.
fn find_start_code(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 2 < data.len() {
        // Skip ahead by up to 3 when the byte cannot be part of a start code.
        match data[i + 2] {
            1 if data[i] == 0 && data[i + 1] == 0 => return Some(i),
            0 => i += 1,
            1 => i += 1,
            _ => i += 3,
        }
    }
    None
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (unit, rest) = match find_start_code(self.rest) {
                Some(at) => (&self.rest[..at], &self.rest[at + 3..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let end = unit.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            if end > 0 {
                return Some(&unit[..end]);
            }
            // An empty NAL unit (two start codes in a row) carries nothing: skip it.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 0, 0,
        ];
        let units: Vec<&[u8]> = nal_units(&au).unwrap().collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
    }

    #[test]
    fn rejects_missing_start_code() {
        assert_eq!(
            nal_units(&[0x65, 1, 2]).unwrap_err(),
            H264Error::NoStartCode
        );
        assert_eq!(
            nal_units(&[0, 1, 0x65]).unwrap_err(),
            H264Error::NoStartCode
        );
        assert_eq!(nal_units(&[]).unwrap_err(), H264Error::NoStartCode);
    }

    proptest! {
        /// NAL units free of emulated start codes (as an encoder's emulation prevention
        /// guarantees) and not ending in zero come back exactly.
        #[test]
        fn joins_and_splits_back(units in proptest::collection::vec(proptest::collection::vec(1u8..=255, 1..50), 1..10), four: Vec<bool>) {
            let mut au = Vec::new();
            for (i, u) in units.iter().enumerate() {
                if four.get(i).copied().unwrap_or(false) { au.push(0); }
                au.extend_from_slice(&[0, 0, 1]);
                au.extend_from_slice(u);
            }
            let got: Vec<Vec<u8>> = nal_units(&au).unwrap().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, units);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(0u8..3, 0..200)) {
            if let Ok(units) = nal_units(&data) {
                for u in units {
                    prop_assert!(!u.is_empty());
                    prop_assert!(u.len() <= data.len());
                }
            }
        }
    }
}
