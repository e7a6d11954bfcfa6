//! Meridian: a data-oriented telemetry control-plane pipeline.
//!
//! Ground stations push satellite telemetry frames; Meridian decodes them
//! ([`decode`]), validates them ([`validate`]), removes the copies several
//! stations delivered and orders them by (sat, seq) ([`dedup`]), and forwards
//! them byte-identical ([`forward`]).
//!
//! # The product
//! - [`wire`]: the frame format, every offset written once.
//! - [`batch`]: a batch of decoded frames as struct-of-arrays columns.
//! - [`decode`], [`validate`], [`dedup`], [`forward`]: one module per stage.
//! - [`stage`]: the [`Stage`](stage::Stage) enum, probes, and the one driver
//!   that runs the stages after decode in order.
//! - [`pipeline`]: [`process_stream`] (reader to writer) and
//!   [`BatchProcessor`], the small stable entry for embedding the stages
//!   after decode (see its module for a runnable example).
//! - [`gaps`]: per-satellite missing ranges of what was forwarded.
//! - [`net`]: the TCP service (`serve`) and its peers; [`log`]: its
//!   structured, rate-limited logs.
//!
//! # The harness
//! [`harness`] holds what measures and tests the product and is not part of
//! it: benchmark layouts, the naive reference model, the throughput runner,
//! synthetic traffic, the counting allocator.

pub mod batch;
pub mod crc;
pub mod decode;
pub mod dedup;
pub mod forward;
pub mod gaps;
pub mod harness;
pub mod log;
pub mod net;
pub mod pipeline;
pub mod stage;
pub mod validate;
pub mod wire;

pub use batch::Batch;
pub use dedup::DEFAULT_WINDOW;
pub use pipeline::{process_stream, BatchProcessor, Config, ProcessError, Summary};
