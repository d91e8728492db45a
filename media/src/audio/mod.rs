//! Audio receive path: the decoder interface and the adaptive jitter buffer.

pub mod decoder;
