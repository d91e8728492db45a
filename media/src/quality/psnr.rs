//! Peak signal-to-noise ratio between two pictures, the usual objective measure of how
//! much a video codec (or concealment) changed a picture.

use super::QualityError;
use crate::codec::I420Frame;

/// PSNR of identical planes, reported instead of infinity.
pub const MAX_PSNR_DB: f64 = 100.0;

/// PSNR per plane and combined, in dB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psnr {
    /// Luma PSNR.
    pub y: f64,
    /// Blue-difference chroma PSNR.
    pub u: f64,
    /// Red-difference chroma PSNR.
    pub v: f64,
    /// All samples of the picture together (4 luma : 1 : 1 chroma weight).
    pub combined: f64,
}

/// PSNR of `degraded` against `reference`; both must be the same size.
pub fn psnr(reference: &I420Frame, degraded: &I420Frame) -> Result<Psnr, QualityError> {
    let (w, h) = (reference.width(), reference.height());
    if (degraded.width(), degraded.height()) != (w, h) {
        return Err(QualityError::SizeMismatch);
    }
    let luma = squared_error(h, |row| Some((reference.y_row(row)?, degraded.y_row(row)?)))?;
    let chroma = |plane| {
        squared_error(h / 2, |row| {
            Some((
                reference.chroma_row(plane, row)?,
                degraded.chroma_row(plane, row)?,
            ))
        })
    };
    let (u, v) = (chroma(1)?, chroma(2)?);
    let total = (luma.0 + u.0 + v.0, luma.1 + u.1 + v.1);
    Ok(Psnr {
        y: to_db(luma),
        u: to_db(u),
        v: to_db(v),
        combined: to_db(total),
    })
}

/// (sum of squared errors, sample count) over `rows` row pairs.
fn squared_error<'a>(
    rows: usize,
    row: impl Fn(usize) -> Option<(&'a [u8], &'a [u8])>,
) -> Result<(f64, usize), QualityError> {
    let mut sse = 0u64;
    let mut n = 0usize;
    for r in 0..rows {
        let (a, b) = row(r).ok_or(QualityError::SizeMismatch)?;
        sse += a
            .iter()
            .zip(b)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)).pow(2))
            .sum::<u64>();
        n += a.len();
    }
    Ok((sse as f64, n))
}

fn to_db((sse, n): (f64, usize)) -> f64 {
    if sse == 0.0 || n == 0 {
        return MAX_PSNR_DB;
    }
    let mse = sse / n as f64;
    (10.0 * (255.0 * 255.0 / mse).log10()).min(MAX_PSNR_DB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_a_uniform_error() {
        let reference = I420Frame::new(16, 8).unwrap();
        let mut degraded = reference.clone();
        // Every luma sample off by 5: MSE 25 → 10·log10(65025 / 25) = 34.15 dB.
        for s in degraded.planes_mut().0.iter_mut() {
            *s += 5;
        }
        let p = psnr(&reference, &degraded).unwrap();
        assert!((p.y - 34.151).abs() < 0.001, "{}", p.y);
        assert_eq!((p.u, p.v), (MAX_PSNR_DB, MAX_PSNR_DB));
        // Luma is 2/3 of all samples: MSE 25·2/3.
        let combined = 10.0 * (65025.0f64 / (25.0 * 2.0 / 3.0)).log10();
        assert!((p.combined - combined).abs() < 1e-9);
        let other = I420Frame::new(8, 8).unwrap();
        assert_eq!(psnr(&reference, &other), Err(QualityError::SizeMismatch));
    }
}
