//! Audio receive path: the decoder interface, the adaptive jitter buffer, an L16 codec and
//! seeded network traces for exercising them.

pub mod decoder;
pub mod jitter;
pub mod l16;
pub mod netsim;
