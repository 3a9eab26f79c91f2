//! The key/value cache: one preallocated buffer per layer, written in place.
//!
//! candle-transformers' example models grow their cache with `Tensor::cat`
//! every step, which copies the whole history each token: quadratic over a
//! long prompt. Here each layer owns a `(kv_heads, capacity, head_dim)` buffer
//! allocated once; new keys and values are written into it at the current
//! position and attention reads a view of the filled prefix.
//!
//! Entries are f16, as llama.cpp stores them by default: half the memory of
//! f32, and half the bytes generation streams through per token once the
//! context is long.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The type of every cached key and value.
const ENTRY: DType = DType::F16;

/// Shape of the cache a model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// Number of transformer layers.
    pub layers: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Dimension of each key head.
    pub key_dim: usize,
    /// Dimension of each value head.
    pub value_dim: usize,
}

impl CacheShape {
    /// Bytes the cache takes for `capacity` positions (f16 keys and values).
    /// Saturates rather than overflows: a shape too large to count is too
    /// large to allocate, and the memory check refuses it.
    pub fn bytes(&self, capacity: usize) -> u64 {
        [
            self.layers,
            self.kv_heads,
            self.key_dim.saturating_add(self.value_dim),
            capacity,
            ENTRY.size_in_bytes(),
        ]
        .into_iter()
        .fold(1u64, |acc, n| acc.saturating_mul(n as u64))
    }
}

/// Keys and values of every position processed so far, for every layer.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Allocates a cache for `capacity` positions.
    ///
    /// The buffers are zero-initialised by the allocator, so on CPU memory is
    /// committed only as positions are written.
    pub fn new(shape: CacheShape, capacity: usize, device: &Device) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::InvalidOption(
                "the context size must be at least 1 token".into(),
            ));
        }
        let alloc = |dim| Tensor::zeros((shape.kv_heads, capacity, dim), ENTRY, device);
        let mut keys = Vec::with_capacity(shape.layers);
        let mut values = Vec::with_capacity(shape.layers);
        for _ in 0..shape.layers {
            keys.push(alloc(shape.key_dim)?);
            values.push(alloc(shape.value_dim)?);
        }
        Ok(Self {
            keys,
            values,
            len: 0,
            capacity,
        })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Forgets everything, keeping the buffers.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets every position from `len` on (for reusing a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `n` more positions fit.
    pub(crate) fn reserve(&self, n: usize) -> Result<()> {
        if n > self.remaining() {
            return Err(Error::ContextOverflow {
                needed: self.len + n,
                reserve: 0,
                context: self.capacity,
            });
        }
        Ok(())
    }

    /// Writes `k` and `v` (each `(kv_heads, n, dim)`) for `layer` at the
    /// current position and returns views of everything cached for that layer
    /// including them.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        self.keys[layer].slice_set(&k.to_dtype(ENTRY)?.contiguous()?, 1, self.len)?;
        self.values[layer].slice_set(&v.to_dtype(ENTRY)?.contiguous()?, 1, self.len)?;
        let total = self.len + n;
        Ok((
            self.keys[layer].narrow(1, 0, total)?,
            self.values[layer].narrow(1, 0, total)?,
        ))
    }

    /// Marks `n` positions as filled, once every layer has appended them.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
