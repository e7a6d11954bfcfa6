//! Meridian: a data-oriented telemetry control-plane pipeline.
//!
//! Ground stations push satellite telemetry frames; Meridian decodes them
//! ([`decode`]), validates them ([`validate`]), removes the copies several
//! stations delivered and orders them by (sat, seq) ([`dedup`]), and forwards
//! them byte-identical ([`forward`]). Frames travel in [`batch::Batch`]es of
//! struct-of-arrays columns; [`pipeline`] strings the stages together.
//! [`reference`] is the naive model the fast pipeline is tested against, and
//! [`gen`] makes synthetic ground-station traffic.

#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc_count;
pub mod batch;
pub mod decode;
pub mod dedup;
pub mod forward;
pub mod gen;
pub mod layout;
pub mod net;
pub mod pipeline;
pub mod reference;
pub mod runner;
pub mod validate;
pub mod wire;

pub use batch::Batch;
pub use dedup::DEFAULT_WINDOW;
pub use pipeline::{process_stream, Config, Pipeline, Summary};
