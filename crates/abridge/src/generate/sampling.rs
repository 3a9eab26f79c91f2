//! Choosing the next token from the logits.
//!
//! Greedy decoding takes the first maximum, as llama.cpp does, so greedy runs
//! can be compared token for token. Before choosing, the logits are adjusted
//! by the repeat, presence and frequency penalties, then by the DRY sequence
//! penalty. Sampling then applies top-k, temperature, top-p and min-p, and
//! draws from a seeded generator so a run is reproducible.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::tokenizer::TokenId;

/// How the next token is chosen.
///
/// [`SamplingOptions::default`] is the setting for summaries;
/// [`SamplingOptions::greedy`] is plain greedy decoding with every penalty
/// off.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Softmax temperature; 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities sum to `p` (1: no limit).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times that of the most
    /// likely token (0: off). Only used when sampling (temperature above 0).
    pub min_p: f32,
    /// Divide the positive logits of recently seen tokens by this, and
    /// multiply the negative ones (1: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat, presence and frequency penalties
    /// look at (0: none, which turns them off).
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every token seen in the last
    /// `repeat_last_n` tokens (0: off).
    pub presence_penalty: f32,
    /// Subtracted from the logit of a token for each time it occurs in the
    /// last `repeat_last_n` tokens (0: off).
    pub frequency_penalty: f32,
    /// Strength of the DRY ("don't repeat yourself") penalty on tokens that
    /// would extend a sequence already seen (0: off).
    pub dry_multiplier: f32,
    /// How fast the DRY penalty grows with the length of the repeated
    /// sequence; must be at least 1 when DRY is on.
    pub dry_base: f32,
    /// Repeated sequences up to this length are not penalized by DRY.
    pub dry_allowed_length: usize,
    /// How many recent tokens DRY searches for repeats (0: all of them).
    pub dry_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingOptions {
    /// The summary default: deterministic greedy decoding with a light repeat
    /// penalty and the DRY penalty. For plain greedy decoding, as llama.cpp's
    /// greedy sampler does it, use [`SamplingOptions::greedy`].
    ///
    /// Small models under plain greedy decoding tend to fall into loops,
    /// repeating a sentence or a list item until the token limit. The
    /// penalties break such loops while keeping the output a function of the
    /// input alone. `min_p`, `top_k` and `top_p` only matter if the
    /// temperature is raised above 0.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            dry_multiplier: 0.8,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_last_n: 0,
            seed: 299_792_458,
        }
    }
}

impl SamplingOptions {
    /// Plain greedy decoding with every penalty off: always the first most
    /// likely token, so runs can be compared token for token with llama.cpp.
    #[must_use]
    pub fn greedy() -> Self {
        Self {
            min_p: 0.0,
            repeat_penalty: 1.0,
            dry_multiplier: 0.0,
            ..Self::default()
        }
    }

    /// Checks that every value is in range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidOption(message));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return invalid(format!(
                "temperature must be 0 or more, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return invalid(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return invalid(format!(
                "repeat penalty must be positive, got {}",
                self.repeat_penalty
            ));
        }
        if !self.presence_penalty.is_finite() {
            return invalid(format!(
                "presence penalty must be a finite number, got {}",
                self.presence_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return invalid(format!(
                "frequency penalty must be a finite number, got {}",
                self.frequency_penalty
            ));
        }
        if !(self.dry_multiplier >= 0.0 && self.dry_multiplier.is_finite()) {
            return invalid(format!(
                "DRY multiplier must be 0 or more, got {}",
                self.dry_multiplier
            ));
        }
        // A base below 1 would make longer repeats cheaper than short ones.
        if self.dry_multiplier > 0.0 && !(self.dry_base >= 1.0 && self.dry_base.is_finite()) {
            return invalid(format!(
                "DRY base must be 1 or more when the DRY multiplier is set, got {}",
                self.dry_base
            ));
        }
        Ok(())
    }
}

/// A seeded token sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    rng: SplitMix64,
    /// Sorted and deduplicated, for binary search.
    breakers: Vec<TokenId>,
    /// History positions before this one are never searched by DRY.
    dry_from: usize,
}

impl Sampler {
    /// A sampler with `options`.
    pub fn new(options: SamplingOptions) -> Result<Self> {
        options.validate()?;
        let rng = SplitMix64::new(options.seed);
        Ok(Self {
            options,
            rng,
            breakers: Vec::new(),
            dry_from: 0,
        })
    }

    /// The same sampler with `ids` as its DRY sequence breakers, replacing any
    /// set before: a repeated sequence is never matched across one of these
    /// tokens, and they are never penalized by DRY themselves. Typical
    /// breakers are the tokens of newlines, `:`, `"` and `*`, so that
    /// structure such as list markers can repeat freely.
    #[must_use]
    pub fn with_breakers(mut self, ids: impl IntoIterator<Item = TokenId>) -> Self {
        self.breakers = ids.into_iter().collect();
        self.breakers.sort_unstable();
        self.breakers.dedup();
        self
    }

    /// The same sampler with DRY looking only at history from position `n`
    /// on: given the prompt's length, a summary may quote its document, and
    /// only repeating itself is penalized.
    #[must_use]
    pub fn with_dry_from(mut self, n: usize) -> Self {
        self.dry_from = n;
        self
    }

    /// Picks the next token from `logits`, given the tokens seen so far.
    ///
    /// The penalties are applied to `logits` in place.
    pub fn sample(&mut self, logits: &mut [f32], history: &[TokenId]) -> TokenId {
        self.penalize_recent(logits, history);
        self.penalize_repeated_sequences(logits, history);
        let o = &self.options;
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
        normalize(&mut probs);
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
            normalize(&mut probs);
        }
        if o.min_p > 0.0 {
            // Probabilities are in decreasing order, so the first one is the
            // top and the ones below the floor form a tail; the top itself
            // always stays since min-p is at most 1.
            let floor = probs[0] * o.min_p;
            if let Some(keep) = probs.iter().position(|&p| p < floor) {
                probs.truncate(keep);
                normalize(&mut probs);
            }
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

    /// The repeat, presence and frequency penalties, in llama.cpp's way: once
    /// per distinct token of the last `repeat_last_n`, the repeat penalty
    /// first.
    fn penalize_recent(&self, logits: &mut [f32], history: &[TokenId]) {
        let o = &self.options;
        if o.repeat_penalty == 1.0 && o.presence_penalty == 0.0 && o.frequency_penalty == 0.0 {
            return;
        }
        let start = history.len().saturating_sub(o.repeat_last_n);
        let mut seen: Vec<TokenId> = history[start..].to_vec();
        seen.sort_unstable();
        for run in seen.chunk_by(|a, b| a == b) {
            let Some(l) = logits.get_mut(run[0] as usize) else {
                continue;
            };
            if o.repeat_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / o.repeat_penalty
                } else {
                    *l * o.repeat_penalty
                };
            }
            *l -= o.presence_penalty + o.frequency_penalty * run.len() as f32;
        }
    }

    /// The DRY penalty. A token `t` is penalized by the longest `n` such that
    /// the last `n` tokens, followed by `t`, already occur in the window, as
    /// llama.cpp defines it; the match lengths for every earlier position
    /// come from one linear pass, so long histories stay cheap.
    fn penalize_repeated_sequences(&self, logits: &mut [f32], history: &[TokenId]) {
        let o = &self.options;
        if o.dry_multiplier == 0.0 {
            return;
        }
        let start = match o.dry_last_n {
            0 => 0,
            n => history.len().saturating_sub(n),
        }
        .max(self.dry_from)
        .min(history.len());
        let window = &history[start..];
        let len = window.len();
        if len < 2 {
            return;
        }
        // The repeated suffix cannot reach back past the latest breaker, and
        // the earlier occurrence equals it token for token, so it cannot
        // contain one either.
        let limit = window
            .iter()
            .rev()
            .take_while(|&&t| !self.is_breaker(t))
            .count();
        if limit < o.dry_allowed_length {
            return;
        }
        let matches = suffix_matches(window);
        let mut longest: HashMap<TokenId, usize> = HashMap::new();
        // The occurrence that ends `k` tokens before the last one is followed
        // by `window[len - k]`: emitting that token would extend the repeat.
        for (k, &n) in matches.iter().enumerate().skip(1) {
            let n = n.min(limit);
            if n >= o.dry_allowed_length {
                let next = longest.entry(window[len - k]).or_insert(n);
                *next = (*next).max(n);
            }
        }
        for (token, n) in longest {
            if self.is_breaker(token) {
                continue;
            }
            let Some(l) = logits.get_mut(token as usize) else {
                continue;
            };
            // Computed in f64 and clamped, so that however long the repeat,
            // the penalty stays finite (f32::MAX already rules a token out).
            let exponent = (n - o.dry_allowed_length) as f64;
            let penalty = f64::from(o.dry_multiplier) * f64::from(o.dry_base).powf(exponent);
            *l -= penalty.min(f64::from(f32::MAX)) as f32;
        }
    }

    fn is_breaker(&self, token: TokenId) -> bool {
        self.breakers.binary_search(&token).is_ok()
    }
}

/// Scales `probs` to sum to 1.
fn normalize(probs: &mut [f32]) {
    let total: f32 = probs.iter().sum();
    for p in probs {
        *p /= total;
    }
}

/// For each `k`, how many tokens the sequence ending `k` tokens before the
/// end has in common with the sequence ending at the end, counted backwards
/// (the Z-function of the reversed sequence). Entry 0 is left at 0.
fn suffix_matches(tokens: &[TokenId]) -> Vec<usize> {
    let len = tokens.len();
    let back = |i: usize| tokens[len - 1 - i];
    let mut z = vec![0; len];
    // `[left, right)` is the match, among those found so far, that reaches
    // furthest back; inside it, an earlier entry tells where to resume, which
    // is what keeps the whole pass linear.
    let (mut left, mut right) = (0, 0);
    for k in 1..len {
        let mut n = if k < right {
            z[k - left].min(right - k)
        } else {
            0
        };
        while k + n < len && back(n) == back(k + n) {
            n += 1;
        }
        if k + n > right {
            (left, right) = (k, k + n);
        }
        z[k] = n;
    }
    z
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

    /// Applies the penalties of `opts` to `logits` through a greedy sample.
    fn penalized(
        opts: SamplingOptions,
        breakers: &[TokenId],
        logits: &[f32],
        history: &[TokenId],
    ) -> Vec<f32> {
        let mut s = Sampler::new(SamplingOptions {
            temperature: 0.0,
            ..opts
        })
        .unwrap()
        .with_breakers(breakers.iter().copied());
        let mut logits = logits.to_vec();
        s.sample(&mut logits, history);
        logits
    }

    fn dry(multiplier: f32, base: f32, allowed_length: usize) -> SamplingOptions {
        SamplingOptions {
            dry_multiplier: multiplier,
            dry_base: base,
            dry_allowed_length: allowed_length,
            ..SamplingOptions::greedy()
        }
    }

    /// The DRY penalty straight from its definition, in quadratic time.
    fn dry_reference(
        opts: &SamplingOptions,
        breakers: &[TokenId],
        logits: &[f32],
        history: &[TokenId],
    ) -> Vec<f32> {
        let start = match opts.dry_last_n {
            0 => 0,
            n => history.len().saturating_sub(n),
        };
        let w = &history[start..];
        let mut longest: HashMap<TokenId, usize> = HashMap::new();
        for j in 0..w.len().saturating_sub(1) {
            let mut n = 0;
            while n <= j && w[j - n] == w[w.len() - 1 - n] && !breakers.contains(&w[j - n]) {
                n += 1;
            }
            if n >= opts.dry_allowed_length {
                let e = longest.entry(w[j + 1]).or_insert(n);
                *e = (*e).max(n);
            }
        }
        let mut out = logits.to_vec();
        for (t, n) in longest {
            if !breakers.contains(&t) {
                let exp = (n - opts.dry_allowed_length) as i32;
                out[t as usize] -= opts.dry_multiplier * opts.dry_base.powi(exp);
            }
        }
        out
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingOptions::greedy()).unwrap();
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn greedy_is_argmax_whatever_the_history() {
        let mut rng = SplitMix64::new(5);
        let mut s = Sampler::new(SamplingOptions::greedy()).unwrap();
        let history: Vec<TokenId> = [1, 2, 3].repeat(20);
        for _ in 0..100 {
            let logits: Vec<f32> = (0..8).map(|_| rng.next_f32() * 4.0 - 2.0).collect();
            let mut after = logits.clone();
            assert_eq!(s.sample(&mut after, &history), argmax(&logits));
            assert_eq!(after, logits, "greedy() must not penalize");
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let opts = SamplingOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            ..SamplingOptions::greedy()
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
            ..SamplingOptions::greedy()
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
            ..SamplingOptions::greedy()
        };
        let mut s = Sampler::new(opts).unwrap();
        assert_eq!(s.sample(&mut [3.0, 2.0], &[0]), 1);
    }

    #[test]
    fn presence_and_frequency_penalties_count_the_window() {
        let opts = SamplingOptions {
            presence_penalty: 0.3,
            frequency_penalty: 0.2,
            ..SamplingOptions::greedy()
        };
        let history = [3, 1, 1, 2];
        let out = penalized(opts.clone(), &[], &[0.5; 5], &history);
        let want = [0.5, 0.5 - 0.3 - 0.4, 0.5 - 0.3 - 0.2, 0.5 - 0.3 - 0.2, 0.5];
        for (got, want) in out.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
        // Only the last two tokens are in a window of 2.
        let opts = SamplingOptions {
            repeat_last_n: 2,
            ..opts
        };
        let out = penalized(opts, &[], &[0.5; 5], &history);
        let want = [0.5, 0.5 - 0.3 - 0.2, 0.5 - 0.3 - 0.2, 0.5, 0.5];
        for (got, want) in out.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn penalties_apply_in_order() {
        // Repeat penalty, then presence, then DRY: 2 / 2 - 0.25 - 0.5 * 2^0.
        let opts = SamplingOptions {
            repeat_penalty: 2.0,
            presence_penalty: 0.25,
            ..dry(0.5, 2.0, 2)
        };
        let out = penalized(opts, &[], &[2.0; 4], &[1, 2, 3, 1, 2]);
        assert_eq!(out, [2.0, 0.75, 0.75, 2.0 / 2.0 - 0.25 - 0.5]);
    }

    #[test]
    fn dry_penalizes_only_the_token_extending_a_repeat() {
        // "1 2 3" occurred before, followed by 4; "3" alone also occurred
        // before, followed by 7, but one token is below the allowed length.
        let history = [5, 3, 7, 1, 2, 3, 4, 9, 1, 2, 3];
        let out = penalized(dry(1.0, 2.0, 2), &[], &[0.0; 10], &history);
        let mut want = [0.0; 10];
        want[4] = -2.0; // n = 3: 1 * 2^(3 - 2)
        assert_eq!(out, want);
    }

    #[test]
    fn dry_respects_the_allowed_length() {
        let history = [1, 2, 9, 1, 2];
        let out = penalized(dry(0.8, 1.75, 3), &[], &[0.0; 10], &history);
        assert_eq!(out, [0.0; 10], "a repeat of 2 is allowed at length 3");
        let out = penalized(dry(0.8, 1.75, 2), &[], &[0.0; 10], &history);
        let mut want = [0.0; 10];
        want[9] = -0.8;
        assert_eq!(out, want);
    }

    #[test]
    fn dry_window_limits_the_search() {
        let history = [1, 2, 3, 4, 9, 9, 1, 2, 3];
        let opts = SamplingOptions {
            dry_last_n: 5,
            ..dry(1.0, 2.0, 2)
        };
        assert_eq!(
            penalized(opts.clone(), &[], &[0.0; 10], &history),
            [0.0; 10]
        );
        let opts = SamplingOptions {
            dry_last_n: 9,
            ..opts
        };
        assert_eq!(penalized(opts, &[], &[0.0; 10], &history)[4], -2.0);
    }

    #[test]
    fn breakers_stop_a_match() {
        let history = [1, 2, 3, 4, 9, 1, 2, 3];
        let out = penalized(dry(1.0, 2.0, 2), &[], &[0.0; 10], &history);
        assert_eq!(out[4], -2.0);
        // With 2 a breaker, only "3" can match, which is allowed.
        let out = penalized(dry(1.0, 2.0, 2), &[2], &[0.0; 10], &history);
        assert_eq!(out, [0.0; 10]);
        // A breaker that would extend a repeat is not penalized itself.
        let history = [1, 2, 5, 1, 2];
        let out = penalized(dry(1.0, 2.0, 2), &[], &[0.0; 10], &history);
        assert_eq!(out[5], -1.0);
        let out = penalized(dry(1.0, 2.0, 2), &[5], &[0.0; 10], &history);
        assert_eq!(out, [0.0; 10]);
    }

    #[test]
    fn dry_matches_its_definition_on_random_histories() {
        let mut rng = SplitMix64::new(11);
        for round in 0..300 {
            let vocab = 2 + round % 5;
            let len = (rng.next_u64() % 120) as usize;
            let history: Vec<TokenId> = (0..len)
                .map(|_| (rng.next_u64() % vocab as u64) as TokenId)
                .collect();
            let breakers: &[TokenId] = if round % 3 == 0 { &[0] } else { &[] };
            let opts = SamplingOptions {
                dry_last_n: [0, 7, 40][round % 3],
                ..dry(0.5, 1.5, round % 4)
            };
            let logits = vec![1.0; vocab];
            let got = penalized(opts.clone(), breakers, &logits, &history);
            let want = dry_reference(&opts, breakers, &logits, &history);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{history:?} {opts:?}: {got:?} != {want:?}"
                );
            }
        }
    }

    #[test]
    fn dry_penalty_stays_finite_on_long_repeats() {
        let history = vec![7; 10_000];
        let mut s = Sampler::new(dry(0.8, 1.75, 2)).unwrap();
        for _ in 0..50 {
            let mut logits = [0.0; 8];
            assert_eq!(s.sample(&mut logits, &history), 0);
            assert!(logits[7].is_finite() && logits[7] < -1e30, "{logits:?}");
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let draws = |min_p: f32| {
            let mut s = Sampler::new(SamplingOptions {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p,
                ..SamplingOptions::greedy()
            })
            .unwrap();
            let mut counts = [0; 3];
            for _ in 0..2000 {
                counts[s.sample(&mut [2.0, 1.9, 0.0], &[]) as usize] += 1;
            }
            counts
        };
        // Token 2 has e^-2 = 0.135 of the top probability.
        let without = draws(0.0);
        assert!(without[2] > 50, "{without:?}");
        let with = draws(0.2);
        assert_eq!(with[2], 0, "{with:?}");
        assert!(with[0] > 500 && with[1] > 500, "{with:?}");
    }

    #[test]
    fn default_is_deterministic_and_valid() {
        let opts = SamplingOptions::default();
        opts.validate().unwrap();
        assert_eq!(opts.temperature, 0.0);
        let mut rng = SplitMix64::new(3);
        let steps: Vec<(Vec<f32>, Vec<TokenId>)> = (0..50)
            .map(|i| {
                let logits = (0..16).map(|_| rng.next_f32() * 6.0).collect();
                let history = (0..40 + i)
                    .map(|_| (rng.next_u64() % 16) as TokenId)
                    .collect();
                (logits, history)
            })
            .collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingOptions {
                seed,
                ..SamplingOptions::default()
            })
            .unwrap();
            steps
                .iter()
                .map(|(l, h)| s.sample(&mut l.clone(), h))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_eq!(run(1), run(2), "greedy must not depend on the seed");
    }

    #[test]
    fn default_breaks_a_loop_that_greedy_follows() {
        let history = [1, 2, 3, 1, 2, 3, 1, 2];
        let logits = [0.0, 0.0, 0.0, 1.0, 0.5];
        let mut greedy = Sampler::new(SamplingOptions::greedy()).unwrap();
        assert_eq!(greedy.sample(&mut logits.clone(), &history), 3);
        let mut default = Sampler::new(SamplingOptions::default()).unwrap();
        assert_eq!(default.sample(&mut logits.clone(), &history), 4);
    }

    #[test]
    fn bad_options_are_rejected() {
        let base = SamplingOptions::default();
        let bad = [
            SamplingOptions {
                top_p: 0.0,
                ..base.clone()
            },
            SamplingOptions {
                temperature: f32::NAN,
                ..base.clone()
            },
            SamplingOptions {
                min_p: -0.1,
                ..base.clone()
            },
            SamplingOptions {
                min_p: 1.5,
                ..base.clone()
            },
            SamplingOptions {
                min_p: f32::NAN,
                ..base.clone()
            },
            SamplingOptions {
                presence_penalty: f32::INFINITY,
                ..base.clone()
            },
            SamplingOptions {
                frequency_penalty: f32::NAN,
                ..base.clone()
            },
            SamplingOptions {
                dry_multiplier: -1.0,
                ..base.clone()
            },
            SamplingOptions {
                dry_multiplier: f32::INFINITY,
                ..base.clone()
            },
            SamplingOptions {
                dry_base: 0.9,
                ..base.clone()
            },
            SamplingOptions {
                dry_base: f32::INFINITY,
                ..base.clone()
            },
        ];
        for opts in bad {
            let Err(Error::InvalidOption(message)) = Sampler::new(opts.clone()) else {
                panic!("accepted {opts:?}");
            };
            assert!(!message.is_empty());
        }
        // The DRY base does not matter while DRY is off.
        let off = SamplingOptions {
            dry_multiplier: 0.0,
            dry_base: 0.5,
            ..base
        };
        assert!(Sampler::new(off).is_ok());
        assert!(SamplingOptions::greedy().validate().is_ok());
    }

    #[test]
    fn dry_ignores_history_before_its_start() {
        let history = [1, 2, 3, 9, 1, 2];
        let opts = dry(1.0, 2.0, 2);
        assert!(penalized(opts.clone(), &[], &[0.0; 10], &history)[3] < 0.0);
        let mut s = Sampler::new(opts).unwrap().with_dry_from(3);
        let mut logits = vec![0.0; 10];
        s.sample(&mut logits, &history);
        assert_eq!(logits[3], 0.0, "the repeat began before position 3");
    }
}
