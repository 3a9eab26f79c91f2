//! Throughput measurement in the manner of llama-bench: prompt processing
//! (`pp`, tokens/s over an N-token prompt) and generation (`tg`, tokens/s
//! over M tokens generated one at a time), repeated, with medians.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::{ContextWindow, Model};
use crate::tokenizer::TokenId;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Prompt length for `pp` (0: skip).
    pub prompt_tokens: usize,
    /// Tokens to generate for `tg` (0: skip).
    pub generated_tokens: usize,
    /// Tokens already in the cache when `tg` starts, one `tg` measurement per
    /// entry (a long-prompt `tg`). Each repetition measures every depth in
    /// turn, so slow-downs of the machine hit them alike.
    pub generation_depths: Vec<usize>,
    /// Repetitions of each measurement.
    pub repetitions: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            prompt_tokens: 512,
            generated_tokens: 128,
            generation_depths: vec![0],
            repetitions: 3,
        }
    }
}

/// Tokens/s of each repetition of one measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Every repetition's tokens/s, in order.
    pub runs: Vec<f64>,
}

impl Throughput {
    /// The median of the runs.
    pub fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The slowest and fastest run.
    pub fn range(&self) -> (f64, f64) {
        let lo = self.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.runs.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    }
}

impl serde::Serialize for Throughput {
    /// `{"median", "runs"}`, in tokens/s.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("median", &self.median())?;
        m.serialize_entry("runs", &self.runs)?;
        m.end()
    }
}

/// The result of [`run`].
///
/// Serialized as `{"pp": {"median", "runs"} | null, "tg": [{"depth",
/// "median", "runs"}, …]}`, in tokens/s.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Prompt processing, when measured.
    pub prompt: Option<Throughput>,
    /// Generation at each requested depth, in the order asked.
    pub generation: Vec<(usize, Throughput)>,
}

impl serde::Serialize for BenchReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(serde::Serialize)]
        struct AtDepth<'a> {
            depth: usize,
            #[serde(flatten)]
            throughput: &'a Throughput,
        }
        let tg: Vec<AtDepth<'_>> = self
            .generation
            .iter()
            .map(|(depth, throughput)| AtDepth {
                depth: *depth,
                throughput,
            })
            .collect();
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("pp", &self.prompt)?;
        m.serialize_entry("tg", &tg)?;
        m.end()
    }
}

/// Tokens spread over the vocabulary, away from the special tokens at its ends.
fn synthetic_tokens(n: usize, vocab: usize) -> Vec<TokenId> {
    let span = vocab.saturating_sub(1000).max(1);
    (0..n)
        .map(|i| ((i * 7919) % span + 500.min(vocab - 1)) as TokenId)
        .collect()
}

/// Measures `model`'s throughput.
pub fn run(model: &Model, options: &BenchOptions) -> Result<BenchReport> {
    if options.repetitions == 0 {
        return Err(Error::InvalidOption(
            "at least one repetition is needed".into(),
        ));
    }
    let depths: &[usize] = if options.generated_tokens > 0 {
        &options.generation_depths
    } else {
        &[]
    };
    let vocab = model.tokenizer().vocab_size();
    let mut prompt = None;
    if options.prompt_tokens > 0 {
        let window = ContextWindow::new(options.prompt_tokens).expect("non-zero");
        let mut cache = model.new_cache(window)?;
        let tokens = synthetic_tokens(options.prompt_tokens, vocab);
        let mut runs = Vec::new();
        for _ in 0..options.repetitions {
            cache.clear();
            let start = Instant::now();
            model.forward(&tokens, &mut cache)?;
            runs.push(tokens.len() as f64 / start.elapsed().as_secs_f64());
        }
        prompt = Some(Throughput { runs });
    } else if depths.is_empty() {
        return Err(Error::InvalidOption(
            "nothing to measure: both token counts are 0".into(),
        ));
    }
    // One cache per depth, its context processed once: each run cuts it back
    // to its depth, so what a run generates never disturbs another depth.
    let deepest = depths.iter().copied().max().unwrap_or(0);
    let context = synthetic_tokens(deepest + 1, vocab);
    let mut generation = Vec::with_capacity(depths.len());
    for &depth in depths {
        let window = ContextWindow::new(depth + options.generated_tokens + 1).expect("non-zero");
        let mut cache = model.new_cache(window)?;
        model.forward(&context[..=depth], &mut cache)?;
        generation.push((depth, cache, Throughput { runs: Vec::new() }));
    }
    for _ in 0..options.repetitions {
        for (depth, cache, throughput) in &mut generation {
            cache.truncate(*depth + 1);
            let start = Instant::now();
            let mut token = context[0];
            for _ in 0..options.generated_tokens {
                let logits = model.forward(&[token], cache)?;
                token = crate::generate::argmax(&logits.to_vec1::<f32>()?);
            }
            let tps = options.generated_tokens as f64 / start.elapsed().as_secs_f64();
            throughput.runs.push(tps);
        }
    }
    let generation = generation
        .into_iter()
        .map(|(depth, _, t)| (depth, t))
        .collect();
    Ok(BenchReport { prompt, generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let t = Throughput {
            runs: vec![3.0, 1.0, 2.0, 10.0],
        };
        assert_eq!(t.median(), 2.5);
        assert_eq!(t.range(), (1.0, 10.0));
    }

    #[test]
    fn synthetic_tokens_stay_in_the_vocabulary() {
        for vocab in [1, 10, 600, 32000] {
            assert!(
                synthetic_tokens(100, vocab)
                    .iter()
                    .all(|&t| (t as usize) < vocab)
            );
        }
    }
}
