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
use crate::tokenizer::TokenId;

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

/// How many tokens `a` and `b` start with in common.
pub(crate) fn common_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Keys and values of every position processed so far, for every layer, and
/// the tokens they came from: a later prompt that starts with the same tokens
/// (the system prompt and instruction every document shares) needs only its
/// own tokens processed.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    tokens: Vec<TokenId>,
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
            tokens: Vec::new(),
            capacity,
        })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether nothing has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens whose keys and values the cache holds, in order.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len()
    }

    /// Forgets everything, keeping the buffers.
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    /// Forgets every position from `len` on (for reusing a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// Keeps what the cache holds of `prefix` when it holds all of it, in
    /// the same places, and forgets everything else; returns whether it did.
    pub fn keep_prefix(&mut self, prefix: &[TokenId]) -> bool {
        let kept = self.shared_prefix(prefix) == prefix.len();
        self.truncate(if kept { prefix.len() } else { 0 });
        kept
    }

    /// How many of `tokens`' first tokens the cache holds, in the same places.
    pub fn shared_prefix(&self, tokens: &[TokenId]) -> usize {
        common_prefix(&self.tokens, tokens)
    }

    /// Checks that `n` more positions fit.
    pub(crate) fn reserve(&self, n: usize) -> Result<()> {
        if n > self.remaining() {
            return Err(Error::ContextOverflow {
                needed: self.len() + n,
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
        let len = self.len();
        self.keys[layer].slice_set(&k.to_dtype(ENTRY)?.contiguous()?, 1, len)?;
        self.values[layer].slice_set(&v.to_dtype(ENTRY)?.contiguous()?, 1, len)?;
        let total = len + n;
        Ok((
            self.keys[layer].narrow(1, 0, total)?,
            self.values[layer].narrow(1, 0, total)?,
        ))
    }

    /// Marks the positions of `tokens` as filled, once every layer has
    /// appended them.
    pub(crate) fn advance(&mut self, tokens: &[TokenId]) {
        self.tokens.extend_from_slice(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_kept_only_when_the_cache_holds_all_of_it() {
        let shape = CacheShape {
            layers: 1,
            kv_heads: 1,
            key_dim: 2,
            value_dim: 2,
        };
        let mut cache = KvCache::new(shape, 8, &Device::Cpu).unwrap();
        cache.advance(&[1, 2, 3, 4]);
        assert_eq!(cache.shared_prefix(&[1, 2, 9]), 2);
        assert!(cache.keep_prefix(&[1, 2]));
        assert_eq!(cache.tokens(), &[1, 2]);
        assert_eq!(cache.remaining(), 6);
        assert!(!cache.keep_prefix(&[1, 3]));
        assert!(cache.is_empty());
    }
}
