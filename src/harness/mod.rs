//! The measuring and testing harness, apart from the product.
//!
//! Nothing here is needed to run Meridian; it is what measures it and holds
//! it to account: the three [`layout`]s the benchmarks compare (the real SoA
//! engine, the same algorithms over structs, and a first version as the
//! yardstick), the naive [`reference`](mod@reference) model of the whole pipeline, the
//! throughput [`runner`] behind `run`, the [`first_version`] job of the
//! stages after decode, deterministic synthetic traffic
//! ([`gen`]), the counting allocator ([`alloc_count`]) and [`naive`] twins of
//! fast paths. The product's surface is the rest of the crate.

pub mod alloc_count;
pub mod first_version;
pub mod gen;
pub mod layout;
pub mod naive;
pub mod reference;
pub mod runner;
