//! Per-packet cost of RTP depacketizing and of the video frame buffer.
use criterion::{Criterion, criterion_group, criterion_main};

fn noop(_c: &mut Criterion) {}

criterion_group!(benches, noop);
criterion_main!(benches);
