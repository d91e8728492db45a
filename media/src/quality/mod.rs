//! Call-quality metrics for the benchmark: SNR and segmental SNR between sent and received
//! audio (with delay alignment), mouth-to-ear delay statistics, the ITU-T G.107 E-model
//! (R factor and MOS) and picture PSNR.

pub mod delay;
pub mod emodel;
pub mod psnr;
pub mod signal;
pub mod snr;

pub use delay::DelayStats;
pub use emodel::{CodecImpairment, EModelInput, GilbertLoss, RFactor, mos_from_r};
pub use psnr::{Psnr, psnr};
pub use snr::{SnrReport, compare as compare_audio};

/// Why a metric could not be computed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QualityError {
    /// The reference is silent (or too short), so there is nothing to compare.
    #[error("reference signal is silent or too short")]
    NoSignal,
    /// No measurements were given.
    #[error("no samples")]
    NoSamples,
    /// The delay search window is larger than allowed.
    #[error("lag window of {max_lag} samples exceeds the limit")]
    LagTooLarge { max_lag: usize },
    /// A segment length of zero.
    #[error("segment length must be positive")]
    EmptySegment,
    /// The two pictures differ in size.
    #[error("pictures differ in size")]
    SizeMismatch,
    /// An E-model input outside its range.
    #[error("E-model input out of range: {0}")]
    Parameter(&'static str),
}
