//! Our own CPU kernels, for the work where candle-core's are slow: matrix
//! products of the legacy quantized block types and of `Q4_K` and `Q6_K` (in tiles,
//! `tiles`), and attention over the f16
//! key/value cache.
//!
//! Each kernel has an x86 path chosen at run time and a portable one, so one
//! binary runs at the best speed the machine allows; `simd` detects what the
//! CPU offers, once, for all of them. They split their work over the model's
//! own threads (`pool`).
//!
//! Public only so that `benches/` can time them; not part of the API.

pub mod attention;
pub mod kquant;
pub mod pool;
pub mod quant;
pub(crate) mod simd;
mod tiles;

pub use tiles::{Gated, GatedMatrix};
