//! Whether two forward passes of the same model agree: another device, or
//! the other [`Kernels`](crate::Kernels), against a reference, token by token
//! on the same prompt. This is how a GPU is checked against the CPU, and how
//! the GPU's arithmetic is checked on a CPU (with the generic kernels).
//!
//! Two correct implementations do not agree bit for bit: activations are
//! quantized to 8 bits before each quantized matrix product, so a last-bit
//! difference in a sum (another summation order, another attention kernel)
//! can move a value by a whole quantization step, and a logit by a few
//! tenths. So the check is not equality but [`Tolerance`]: the same choice at
//! every step except where the reference itself sees a near-tie, the same
//! leading candidates, and logits close everywhere.
//!
//! ```no_run
//! use abridge::{Kernels, Model, ModelOptions};
//! use abridge::parity::{Tolerance, compare};
//!
//! let path = "SmolLM2-135M-Instruct.Q4_1.gguf";
//! let cpu = Model::load(path)?;
//! let generic = Model::load_with(path, ModelOptions::new().kernels(Kernels::Generic))?;
//! let prompt = cpu.tokenizer().encode_prompt("The quick brown fox")?;
//! let report = compare(&cpu, &generic, &prompt, 32)?;
//! assert!(report.failures(&Tolerance::default()).is_empty());
//! # Ok::<(), abridge::Error>(())
//! ```

use serde::Serialize;

use crate::error::{Error, Result};
use crate::generate::argmax;
use crate::model::{ContextWindow, Model};
use crate::tokenizer::TokenId;

/// Candidates compared at each step.
pub const TOP: usize = 5;

/// How far two forward passes may differ and still count as the same
/// computation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    /// Largest gap, in the reference's logits, between the reference's
    /// choice and the other's for a step where they choose differently.
    pub near_tie: f32,
    /// Largest gap below the other side's fifth candidate for a token in one
    /// top five but not in the other.
    pub top_swap: f32,
    /// Largest difference of any one logit.
    pub max_logit_diff: f32,
    /// Least share of steps where both choose the same token.
    pub min_agreement: f64,
}

impl Default for Tolerance {
    /// Twice what separates our CPU kernels from candle's generic ones on a
    /// 600-token summary prompt and 64 steps (2-core AMD EPYC): on SmolLM2
    /// Q4_1 logits up to 1.47 apart, one different choice 0.49 apart in the
    /// reference's logits, a top-five swap 0.52 deep, 63 of 64 choices the
    /// same; on Qwen2.5-0.5B Q4_K_M 0.74, and 63 of 64. An error in a kernel
    /// (a wrong mask, rope or scale) moves logits by whole units at every
    /// step and changes most choices.
    fn default() -> Self {
        Self {
            near_tie: 1.0,
            top_swap: 1.0,
            max_logit_diff: 3.0,
            min_agreement: 0.9,
        }
    }
}

/// One step of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The reference's choice, which both sides are fed next.
    pub reference_token: TokenId,
    /// The other side's choice.
    pub other_token: TokenId,
    /// Largest difference of any one logit.
    pub max_logit_diff: f32,
    /// The reference's logit for its choice minus its logit for the other's
    /// (0 when they choose the same).
    pub choice_gap: f32,
    /// Tokens the two top fives share.
    pub top_shared: usize,
    /// Largest gap below the other side's fifth candidate of a token in one
    /// top five only (0 when the sets are equal).
    pub top_swap_gap: f32,
}

/// What [`compare`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// One entry per step: after the prompt, then after each reference token.
    pub steps: Vec<Step>,
}

impl Report {
    /// Steps where both choose the same token.
    pub fn agreeing_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.reference_token == s.other_token)
            .count()
    }

    /// Largest difference of any one logit over every step.
    pub fn max_logit_diff(&self) -> f32 {
        self.steps
            .iter()
            .map(|s| s.max_logit_diff)
            .fold(0.0, f32::max)
    }

    /// What falls outside `tolerance`, one line per problem (empty when the
    /// two agree).
    pub fn failures(&self, tolerance: &Tolerance) -> Vec<String> {
        let mut out = Vec::new();
        let agree = self.agreeing_steps();
        if (agree as f64) < tolerance.min_agreement * self.steps.len() as f64 {
            out.push(format!(
                "the same choice at only {agree} of {} steps",
                self.steps.len()
            ));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.choice_gap >= tolerance.near_tie {
                out.push(format!(
                    "step {i}: the reference picks {} and the other {}, {:.3} apart in the reference's logits",
                    s.reference_token, s.other_token, s.choice_gap
                ));
            }
            if s.top_swap_gap >= tolerance.top_swap {
                out.push(format!(
                    "step {i}: a top-{TOP} candidate of one side is {:.3} below the other's fifth",
                    s.top_swap_gap
                ));
            }
            if s.max_logit_diff >= tolerance.max_logit_diff {
                out.push(format!(
                    "step {i}: a logit differs by {:.3}",
                    s.max_logit_diff
                ));
            }
        }
        out
    }
}

/// Feeds `prompt` to both models, then `steps` tokens, each the reference's
/// greedy choice (so the two never drift apart on their own choices), and
/// compares the logits after every step.
///
/// Both must be the same model file: loaded on other devices or with other
/// kernels.
pub fn compare(
    reference: &Model,
    other: &Model,
    prompt: &[TokenId],
    steps: usize,
) -> Result<Report> {
    if reference.info().file_size != other.info().file_size
        || reference.info().architecture != other.info().architecture
    {
        return Err(Error::InvalidOption(format!(
            "parity compares one model with itself, not {} with {}",
            reference.info().path.display(),
            other.info().path.display()
        )));
    }
    let tokens = prompt.len() + steps;
    let window = ContextWindow::new(tokens).ok_or(Error::EmptyPrompt)?;
    let (mut ref_cache, mut other_cache) = (reference.new_cache(window)?, other.new_cache(window)?);
    let mut report = Report {
        prompt_tokens: prompt.len(),
        steps: Vec::with_capacity(steps),
    };
    let mut input = prompt.to_vec();
    for _ in 0..steps {
        let a: Vec<f32> = reference.forward(&input, &mut ref_cache)?.to_vec1()?;
        let b: Vec<f32> = other.forward(&input, &mut other_cache)?.to_vec1()?;
        let step = compare_logits(&a, &b);
        input = vec![step.reference_token];
        report.steps.push(step);
    }
    Ok(report)
}

/// Compares the logits of one step.
fn compare_logits(a: &[f32], b: &[f32]) -> Step {
    let (reference_token, other_token) = (argmax(a), argmax(b));
    let (top_a, top_b) = (top(a), top(b));
    let mut top_swap_gap = 0.0f32;
    for (mine, theirs, logits) in [(&top_a, &top_b, b), (&top_b, &top_a, a)] {
        for &t in mine.iter().filter(|t| !theirs.contains(t)) {
            let fifth = theirs[theirs.len() - 1];
            top_swap_gap = top_swap_gap.max(logits[fifth] - logits[t]);
        }
    }
    Step {
        reference_token,
        other_token,
        max_logit_diff: a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max),
        choice_gap: a[reference_token as usize] - a[other_token as usize],
        top_shared: top_a.iter().filter(|t| top_b.contains(t)).count(),
        top_swap_gap,
    }
}

/// The indices of the [`TOP`] largest values, largest first.
fn top(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let n = TOP.min(values.len());
    if n == 0 {
        return order;
    }
    order.select_nth_unstable_by(n - 1, |&x, &y| values[y].total_cmp(&values[x]));
    order.truncate(n);
    order.sort_by(|&x, &y| values[y].total_cmp(&values[x]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_everywhere() {
        let a = [0.1, 3.0, 2.0, -1.0, 0.5, 1.5, 0.0];
        let s = compare_logits(&a, &a);
        assert_eq!((s.reference_token, s.other_token), (1, 1));
        assert_eq!(
            (s.max_logit_diff, s.choice_gap, s.top_swap_gap),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(s.top_shared, TOP);
    }

    #[test]
    fn a_swap_at_the_top_is_measured_in_the_reference_logits() {
        let a = [0.0, 3.0, 2.9, 1.0, 0.9, 0.8, 0.7];
        let b = [0.0, 2.9, 3.0, 1.0, 0.9, 0.8, 0.7];
        let s = compare_logits(&a, &b);
        assert_eq!((s.reference_token, s.other_token), (1, 2));
        assert!((s.choice_gap - 0.1).abs() < 1e-6);
        assert!((s.max_logit_diff - 0.1).abs() < 1e-6);
        // Nine steps that agree and this one.
        let same = compare_logits(&a, &a);
        let mut steps = vec![same; 9];
        steps.push(s);
        let report = Report {
            prompt_tokens: 1,
            steps,
        };
        assert_eq!(report.agreeing_steps(), 9);
        assert!(report.failures(&Tolerance::default()).is_empty());
        let strict = Tolerance {
            near_tie: 0.05,
            ..Tolerance::default()
        };
        assert_eq!(report.failures(&strict).len(), 1);
        let unanimous = Tolerance {
            min_agreement: 1.0,
            ..Tolerance::default()
        };
        assert_eq!(report.failures(&unanimous).len(), 1);
    }

    #[test]
    fn a_candidate_far_below_the_other_top_five_fails() {
        let a = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -3.0];
        // The other side ranks token 6 fourth; the reference puts it 4 below
        // its own fifth.
        let b = [5.0, 4.0, 3.0, 1.0, 0.0, -1.0, 2.0];
        let s = compare_logits(&a, &b);
        assert_eq!(s.top_shared, 4);
        assert!((s.top_swap_gap - 4.0).abs() < 1e-6, "{s:?}");
        let report = Report {
            prompt_tokens: 1,
            steps: vec![s],
        };
        let failures = report.failures(&Tolerance::default());
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("4.000 below"), "{failures:?}");
    }

    #[test]
    fn top_orders_the_largest_first() {
        assert_eq!(
            top(&[1.0, 7.0, 3.0, 9.0, 0.0, 5.0, 2.0]),
            vec![3, 1, 5, 2, 6]
        );
        assert_eq!(top(&[2.0, 1.0]), vec![0, 1]);
    }
}
