//! The one random-number generator abridge uses: SplitMix64, small, fast and
//! well mixed. Owning it keeps seeded runs (sampling, synthetic weights)
//! reproducible across versions of any random-number crate.

/// SplitMix64 over a 64-bit state.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// An independent stream for sub-part `k`, so that parts can be generated
    /// in any order (or in parallel) and still give the same result.
    pub(crate) fn derive(&self, k: u64) -> Self {
        let mut s = Self(self.0 ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self(s.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_floats_stay_in_range_and_spread() {
        let mut r = SplitMix64::new(42);
        let xs: Vec<f32> = (0..10_000).map(|_| r.next_f32()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn derived_streams_differ_and_repeat() {
        let base = SplitMix64::new(7);
        let a: Vec<u64> = (0..4)
            .map({
                let mut s = base.derive(1);
                move |_| s.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut s = base.derive(2);
                move |_| s.next_u64()
            })
            .collect();
        let again: Vec<u64> = (0..4)
            .map({
                let mut s = base.derive(1);
                move |_| s.next_u64()
            })
            .collect();
        assert_ne!(a, b);
        assert_eq!(a, again);
    }
}
