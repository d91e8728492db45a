//! Jitter buffer benchmark (being written).
fn main() {}
