//! Benchmarks and the load tester for apm.
//!
//! The criterion micro-benchmarks live in `benches/` beside this file; run
//! one with `cargo bench -p apm-benches --bench codec`. This library holds
//! nothing yet: it is where code shared by the benches and the load tester
//! goes.
