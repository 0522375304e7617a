//! Benchmarks and the load tester for apm.
//!
//! The criterion micro-benchmarks live in `benches/` beside this crate's
//! `src`; run one with `cargo bench -p apm-benches --bench codec`. The load
//! tester is the `apm-load` binary; its pieces are in [`load`].
#![warn(missing_docs, unreachable_pub)]

pub mod load;
