//! [`I420Frame`]: an 8-bit 4:2:0 planar picture (Y, then U and V at half resolution), the
//! format both the H.264 encoder takes and the decoder produces.

use super::CodecError;

/// Largest picture side OpenH264 accepts (level 5.2: 3840x2160 either way round).
pub const MAX_LONG_SIDE: usize = 3840;
/// Largest shorter side OpenH264 accepts.
pub const MAX_SHORT_SIDE: usize = 2160;

/// An I420 picture with owned planes. Width and height are even, so each chroma plane is
/// exactly `width / 2` x `height / 2`; strides may exceed the visible width.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    /// Visible width in pixels.
    width: usize,
    /// Visible height in pixels.
    height: usize,
    /// Bytes per row of the Y plane (at least `width`).
    y_stride: usize,
    /// Bytes per row of the U and V planes (at least `width / 2`).
    uv_stride: usize,
    /// Luma, `y_stride * height` bytes.
    y: Vec<u8>,
    /// Blue-difference chroma, `uv_stride * height / 2` bytes.
    u: Vec<u8>,
    /// Red-difference chroma, same size as `u`.
    v: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("y_stride", &self.y_stride)
            .field("uv_stride", &self.uv_stride)
            .finish_non_exhaustive()
    }
}

/// Checks a picture size: non-zero, even, and within what OpenH264 can code.
fn check_size(width: usize, height: usize) -> Result<(), CodecError> {
    let odd_or_zero = |d: usize| d == 0 || !d.is_multiple_of(2);
    if odd_or_zero(width) || odd_or_zero(height) {
        return Err(CodecError::Malformed(format!(
            "picture size {width}x{height} must be even and non-zero"
        )));
    }
    if width.max(height) > MAX_LONG_SIDE || width.min(height) > MAX_SHORT_SIDE {
        return Err(CodecError::Malformed(format!(
            "picture size {width}x{height} exceeds {MAX_LONG_SIDE}x{MAX_SHORT_SIDE}"
        )));
    }
    Ok(())
}

impl I420Frame {
    /// A black picture with tightly packed rows.
    pub fn new(width: usize, height: usize) -> Result<Self, CodecError> {
        check_size(width, height)?;
        let chroma = width / 2 * (height / 2);
        Ok(Self {
            width,
            height,
            y_stride: width,
            uv_stride: width / 2,
            // Video-range black: Y = 16, neutral chroma = 128.
            y: vec![16; width * height],
            u: vec![128; chroma],
            v: vec![128; chroma],
        })
    }

    /// Wraps caller planes after checking every size and stride.
    pub fn from_planes(
        width: usize,
        height: usize,
        (y, y_stride): (Vec<u8>, usize),
        (u, v, uv_stride): (Vec<u8>, Vec<u8>, usize),
    ) -> Result<Self, CodecError> {
        check_size(width, height)?;
        if y_stride < width || uv_stride < width / 2 {
            return Err(CodecError::Malformed(format!(
                "strides {y_stride}/{uv_stride} narrower than the {width} pixel width"
            )));
        }
        let plane = |name: &str, have: usize, need: Option<usize>| match need {
            Some(need) if have == need => Ok(()),
            _ => Err(CodecError::Malformed(format!(
                "{name} plane has {have} bytes, expected {need:?}"
            ))),
        };
        plane("Y", y.len(), y_stride.checked_mul(height))?;
        plane("U", u.len(), uv_stride.checked_mul(height / 2))?;
        plane("V", v.len(), uv_stride.checked_mul(height / 2))?;
        Ok(Self {
            width,
            height,
            y_stride,
            uv_stride,
            y,
            u,
            v,
        })
    }

    /// Visible width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Visible height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row strides of the Y plane and of the chroma planes.
    pub fn strides(&self) -> (usize, usize) {
        (self.y_stride, self.uv_stride)
    }

    /// The Y plane, `y_stride * height` bytes.
    pub fn y(&self) -> &[u8] {
        &self.y
    }

    /// The U plane, `uv_stride * height / 2` bytes.
    pub fn u(&self) -> &[u8] {
        &self.u
    }

    /// The V plane, `uv_stride * height / 2` bytes.
    pub fn v(&self) -> &[u8] {
        &self.v
    }

    /// All three planes for writing, in Y, U, V order.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        (&mut self.y, &mut self.u, &mut self.v)
    }

    /// Row `row` of the Y plane, visible pixels only.
    pub fn y_row(&self, row: usize) -> Option<&[u8]> {
        let start = row.checked_mul(self.y_stride)?;
        self.y.get(start..start + self.width)
    }

    /// Row `row` of the U (`plane == 1`) or V (`plane == 2`) plane, visible pixels only.
    pub fn chroma_row(&self, plane: usize, row: usize) -> Option<&[u8]> {
        let data = match plane {
            1 => &self.u,
            2 => &self.v,
            _ => return None,
        };
        let start = row.checked_mul(self.uv_stride)?;
        data.get(start..start + self.width / 2)
    }

    /// Makes this a tightly packed `width` x `height` picture, reusing the allocations.
    pub(crate) fn reshape(&mut self, width: usize, height: usize) -> Result<(), CodecError> {
        check_size(width, height)?;
        self.width = width;
        self.height = height;
        self.y_stride = width;
        self.uv_stride = width / 2;
        self.y.resize(width * height, 16);
        self.u.resize(width / 2 * (height / 2), 128);
        self.v.resize(width / 2 * (height / 2), 128);
        Ok(())
    }

    /// Copies visible rows from strided source planes into this (tightly packed) frame.
    pub(crate) fn copy_from_strided(
        &mut self,
        (y, y_stride): (&[u8], usize),
        (u, v, uv_stride): (&[u8], &[u8], usize),
    ) -> Result<(), CodecError> {
        let (w, h) = (self.width, self.height);
        copy_plane(&mut self.y, w, h, y, y_stride)?;
        copy_plane(&mut self.u, w / 2, h / 2, u, uv_stride)?;
        copy_plane(&mut self.v, w / 2, h / 2, v, uv_stride)
    }
}

/// Copies `rows` rows of `width` bytes from a strided source into a packed destination.
fn copy_plane(
    dst: &mut [u8],
    width: usize,
    rows: usize,
    src: &[u8],
    stride: usize,
) -> Result<(), CodecError> {
    let short = || CodecError::Malformed("decoded plane smaller than its size".into());
    if stride < width {
        return Err(short());
    }
    for (row, out) in dst.chunks_exact_mut(width).take(rows).enumerate() {
        let start = row * stride;
        out.copy_from_slice(src.get(start..start + width).ok_or_else(short)?);
    }
    Ok(())
}

impl openh264::formats::YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.y_stride, self.uv_stride, self.uv_stride)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn accepted_planes_have_every_visible_row(
            w in 0usize..40, h in 0usize..40, ys in 0usize..50, uvs in 0usize..30,
            yl in 0usize..2000, ul in 0usize..600, vl in 0usize..600,
        ) {
            let frame = I420Frame::from_planes(w, h, (vec![0; yl], ys), (vec![0; ul], vec![0; vl], uvs));
            if let Ok(f) = frame {
                prop_assert!(f.y_row(h - 1).is_some());
                prop_assert!(f.chroma_row(1, h / 2 - 1).is_some());
                prop_assert!(f.chroma_row(2, h / 2 - 1).is_some());
                prop_assert!(f.y_row(h).is_none());
            }
        }
    }

    #[test]
    fn rejects_odd_zero_and_oversized_pictures() {
        assert!(I420Frame::new(0, 240).is_err());
        assert!(I420Frame::new(321, 240).is_err());
        assert!(I420Frame::new(3842, 100).is_err());
        assert!(I420Frame::new(2200, 2200).is_err());
        assert!(I420Frame::new(2160, 3840).is_ok());
    }

    #[test]
    fn from_planes_checks_sizes_and_strides() {
        let ok = I420Frame::from_planes(4, 2, (vec![0; 16], 8), (vec![0; 4], vec![0; 4], 4));
        assert_eq!(ok.unwrap().strides(), (8, 4));
        // Y stride narrower than the width.
        assert!(
            I420Frame::from_planes(4, 2, (vec![0; 6], 3), (vec![0; 2], vec![0; 2], 2)).is_err()
        );
        // U plane one byte short.
        assert!(
            I420Frame::from_planes(4, 2, (vec![0; 8], 4), (vec![0; 1], vec![0; 2], 2)).is_err()
        );
        // Overflowing stride.
        assert!(
            I420Frame::from_planes(4, 2, (vec![0; 8], usize::MAX), (vec![0; 2], vec![0; 2], 2))
                .is_err()
        );
    }

    #[test]
    fn strided_copy_keeps_visible_pixels_only() {
        let mut frame = I420Frame::new(4, 2).unwrap();
        let y: Vec<u8> = (0..16).collect();
        frame
            .copy_from_strided((&y, 8), (&[1, 9, 9, 9], &[2, 9, 9, 9], 4))
            .unwrap();
        assert_eq!(frame.y(), &[0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(frame.u(), &[1, 9]);
        assert_eq!(frame.y_row(1), Some(&[8, 9, 10, 11][..]));
        assert_eq!(frame.chroma_row(2, 0), Some(&[2, 9][..]));
        assert_eq!(frame.y_row(2), None);
        assert!(
            frame
                .copy_from_strided((&y[..10], 8), (&[0; 4], &[0; 4], 4))
                .is_err()
        );
    }
}
