//! Criterion micro-benchmarks of the hot pure code (being written).
fn main() {}
