//! # huddle-bench
//!
//! `huddle bench`: synthetic calls under impairment, capacity and load runs, JSON reports
//! and plots. Not built yet: this crate is empty until the benchmark work lands. The
//! signalling load benchmark lives in `signal/benches/` for now.
#![forbid(unsafe_code)]
