//! Choosing the next token from the logits.
//!
//! Greedy decoding takes the first maximum, as llama.cpp does, so greedy runs
//! can be compared token for token. Sampling applies, in llama.cpp's order:
//! repeat penalty, top-k, temperature, top-p, then draws from a seeded
//! generator so a run is reproducible.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::tokenizer::TokenId;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Softmax temperature; 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities sum to `p` (1: no limit).
    pub top_p: f32,
    /// Divide the logits of recently seen tokens by this (1: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingOptions {
    /// Greedy decoding: deterministic, and the best choice for summaries.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 299_792_458,
        }
    }
}

impl SamplingOptions {
    /// Checks that every value is in range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidOption(format!(
                "temperature must be 0 or more, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(Error::InvalidOption(format!(
                "repeat penalty must be positive, got {}",
                self.repeat_penalty
            )));
        }
        Ok(())
    }
}

/// A seeded token sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler with `options`.
    pub fn new(options: SamplingOptions) -> Result<Self> {
        options.validate()?;
        let rng = SplitMix64::new(options.seed);
        Ok(Self { options, rng })
    }

    /// Picks the next token from `logits`, given the tokens seen so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[TokenId]) -> TokenId {
        let o = &self.options;
        if o.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(o.repeat_last_n);
            let mut seen: Vec<TokenId> = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / o.repeat_penalty
                    } else {
                        *l * o.repeat_penalty
                    };
                }
            }
        }
        if o.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut candidates: Vec<(TokenId, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as TokenId, l))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if o.top_k > 0 {
            candidates.truncate(o.top_k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates
            .iter()
            .map(|(_, l)| ((l - max) / o.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if o.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= o.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let total: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut r = self.rng.next_f32();
        for (i, p) in probs.iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return candidates[i].0;
            }
        }
        candidates[probs.len() - 1].0
    }
}

/// The index of the largest value, the first one on ties (as llama.cpp's
/// greedy sampler); NaNs are never chosen over a number.
pub fn argmax(values: &[f32]) -> TokenId {
    let mut best = 0usize;
    for (i, &x) in values.iter().enumerate() {
        if x > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingOptions::default()).unwrap();
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let opts = SamplingOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |opts: SamplingOptions| {
            let mut s = Sampler::new(opts).unwrap();
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(opts.clone()), run(opts.clone()));
        let other = run(SamplingOptions {
            seed: 1,
            ..opts.clone()
        });
        assert_ne!(run(opts), other);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let opts = SamplingOptions {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(opts).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 2.0, 1.9], &[]), 1);
        }
    }

    #[test]
    fn repeat_penalty_moves_away_from_seen_tokens() {
        let opts = SamplingOptions {
            repeat_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(opts).unwrap();
        assert_eq!(s.sample(&mut [3.0, 2.0], &[0]), 1);
    }

    #[test]
    fn bad_options_are_rejected() {
        let bad = SamplingOptions {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
        let bad = SamplingOptions {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
    }
}
