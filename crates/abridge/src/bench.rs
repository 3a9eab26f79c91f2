//! Throughput measurement in the manner of llama-bench: prompt processing
//! (`pp`, tokens/s over an N-token prompt) and generation (`tg`, tokens/s
//! over M tokens generated one at a time), each optionally after `d` tokens
//! already in the context, repeated; reported in rows with llama-bench's field
//! names so tools written for llama-bench read them.
//!
//! ```no_run
//! use abridge::bench::{self, Format, Test};
//!
//! let model = abridge::Model::load("smollm2-135m-instruct-q4_1.gguf")?;
//! let tests = Test::matrix(&[512], &[128], &[0]);
//! let samples = bench::run(&model, &tests, 3)?;
//! let facts = bench::ModelFacts::of(&model)?;
//! let rows: Vec<_> = samples.iter().map(|s| bench::Row::new(&model, &facts, s)).collect();
//! bench::write(&rows, Format::Markdown, &mut std::io::stdout())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;
use std::time::{Instant, SystemTime};

use crate::error::{Error, Result};
use crate::model::arch::PROMPT_CHUNK;
use crate::model::{ContextWindow, Model};
use crate::tokenizer::TokenId;

/// One measurement: a prompt of `prompt` tokens processed at once, or
/// `generated` tokens generated one at a time, after `depth` tokens already
/// in the cache. Exactly one of `prompt` and `generated` is non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Test {
    /// Prompt tokens (`pp`), or 0.
    pub prompt: usize,
    /// Generated tokens (`tg`), or 0.
    pub generated: usize,
    /// Tokens in the context before the test starts.
    pub depth: usize,
}

impl Test {
    /// One test per non-zero prompt size and per non-zero generation size, at
    /// every depth, in llama-bench's order (depth, then pp, then tg).
    ///
    /// ```
    /// use abridge::bench::Test;
    /// let names: Vec<String> = Test::matrix(&[512], &[0, 128], &[0, 4096])
    ///     .iter()
    ///     .map(Test::name)
    ///     .collect();
    /// assert_eq!(names, ["pp512", "tg128", "pp512 @ d4096", "tg128 @ d4096"]);
    /// ```
    pub fn matrix(prompts: &[usize], generated: &[usize], depths: &[usize]) -> Vec<Test> {
        let mut tests = Vec::new();
        for &depth in depths {
            for &prompt in prompts.iter().filter(|&&p| p > 0) {
                tests.push(Test {
                    prompt,
                    generated: 0,
                    depth,
                });
            }
            for &generated in generated.iter().filter(|&&n| n > 0) {
                tests.push(Test {
                    prompt: 0,
                    generated,
                    depth,
                });
            }
        }
        tests
    }

    /// llama-bench's name for it: `pp512`, `tg128`, `tg128 @ d4096`.
    pub fn name(&self) -> String {
        let kind = if self.prompt > 0 {
            format!("pp{}", self.prompt)
        } else {
            format!("tg{}", self.generated)
        };
        if self.depth > 0 {
            format!("{kind} @ d{}", self.depth)
        } else {
            kind
        }
    }

    /// Tokens the test processes (its tokens/s numerator).
    pub fn tokens(&self) -> usize {
        self.prompt + self.generated
    }
}

/// The timings of every repetition of one [`Test`].
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// What was measured.
    pub test: Test,
    /// Nanoseconds of each repetition, in order.
    pub nanos: Vec<u64>,
}

impl Samples {
    /// Tokens/s of each repetition, in order.
    pub fn tokens_per_second(&self) -> Vec<f64> {
        let tokens = self.test.tokens() as f64;
        self.nanos
            .iter()
            .map(|&ns| tokens * 1e9 / ns.max(1) as f64)
            .collect()
    }

    /// The mean tokens/s of the repetitions (llama-bench's `avg_ts`).
    pub fn mean(&self) -> f64 {
        mean(&self.tokens_per_second())
    }

    /// The sample standard deviation of the repetitions' tokens/s
    /// (llama-bench's `stddev_ts`; 0 for a single repetition).
    pub fn stddev(&self) -> f64 {
        stddev(&self.tokens_per_second())
    }

    /// The median tokens/s, the figure to quote on a noisy machine.
    ///
    /// ```
    /// use abridge::bench::{Samples, Test};
    /// let test = Test { prompt: 0, generated: 100, depth: 0 };
    /// // 1 s, 2 s, 4 s, 0.5 s for 100 tokens: 100, 50, 25 and 200 tokens/s.
    /// let s = Samples { test, nanos: vec![1_000_000_000, 2_000_000_000, 4_000_000_000, 500_000_000] };
    /// assert_eq!(s.median(), 75.0);
    /// ```
    pub fn median(&self) -> f64 {
        let mut v = self.tokens_per_second();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Tokens spread over the vocabulary, away from the special tokens at its ends.
fn synthetic_tokens(n: usize, vocab: usize) -> Vec<TokenId> {
    let span = vocab.saturating_sub(1000).max(1);
    (0..n)
        .map(|i| ((i * 7919) % span + 500.min(vocab - 1)) as TokenId)
        .collect()
}

/// Measures each of `tests` `repetitions` times on `model`.
///
/// Each repetition runs every test in turn, so a slow-down of the machine
/// hits them alike, and nothing is run before the first repetition: a slow
/// first prompt shows in the samples. The context before a test (its depth)
/// is processed once per depth; each run cuts the cache back to it, so what
/// one test adds never disturbs another.
pub fn run(model: &Model, tests: &[Test], repetitions: usize) -> Result<Vec<Samples>> {
    if repetitions == 0 {
        return Err(Error::InvalidOption(
            "at least one repetition is needed".into(),
        ));
    }
    if tests.is_empty() {
        return Err(Error::InvalidOption(
            "nothing to measure: every prompt and generation size is 0".into(),
        ));
    }
    if let Some(t) = tests.iter().find(|t| (t.prompt > 0) == (t.generated > 0)) {
        return Err(Error::InvalidOption(format!(
            "a test is either a prompt or a generation, not both or neither ({t:?})"
        )));
    }
    let vocab = model.tokenizer().vocab_size();
    let mut depths: Vec<usize> = tests.iter().map(|t| t.depth).collect();
    depths.sort_unstable();
    depths.dedup();
    let deepest = depths.last().copied().unwrap_or(0);
    let context = synthetic_tokens(deepest, vocab);
    let mut caches = Vec::with_capacity(depths.len());
    for &depth in &depths {
        let longest = tests
            .iter()
            .filter(|t| t.depth == depth)
            .map(Test::tokens)
            .max()
            .unwrap_or(1);
        let window = ContextWindow::new(depth + longest).expect("a test has tokens");
        let mut cache = model.new_cache(window)?;
        if depth > 0 {
            model.forward(&context[..depth], &mut cache)?;
        }
        caches.push(cache);
    }
    let longest_prompt = tests.iter().map(|t| t.prompt).max().unwrap_or(0);
    let prompt = synthetic_tokens(longest_prompt, vocab);
    let first_generated = synthetic_tokens(1, vocab)[0];
    let mut samples: Vec<Samples> = tests
        .iter()
        .map(|&test| Samples {
            test,
            nanos: Vec::with_capacity(repetitions),
        })
        .collect();
    for _ in 0..repetitions {
        for s in &mut samples {
            let test = s.test;
            let slot = depths
                .binary_search(&test.depth)
                .expect("every depth has a cache");
            let cache = &mut caches[slot];
            cache.truncate(test.depth);
            let start = Instant::now();
            if test.prompt > 0 {
                model.forward(&prompt[..test.prompt], cache)?;
            } else {
                let mut token = first_generated;
                for _ in 0..test.generated {
                    let logits = model.forward(&[token], cache)?;
                    token = crate::generate::argmax(&logits.to_vec1::<f32>()?);
                }
            }
            s.nanos
                .push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(samples)
}

/// What a report says of the model file, read from its header once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    /// The file's name, as llama-bench's `model_filename` (the full path).
    pub filename: String,
    /// `<architecture> <size> <quantization>`, e.g. `llama 7B Q4_K_M`.
    pub kind: String,
    /// Bytes of tensor data.
    pub size: u64,
    /// Number of weights.
    pub parameters: u64,
}

impl ModelFacts {
    /// Reads the facts of `model`'s file.
    pub fn of(model: &Model) -> Result<Self> {
        let details = crate::gguf::inspect(&model.info().path)?;
        let size = details.tensor_types.iter().map(|t| t.bytes).sum();
        let quant = details.quantization.as_deref().unwrap_or("?");
        Ok(Self {
            filename: details.path.display().to_string(),
            kind: format!(
                "{} {} {quant}",
                details.architecture,
                size_label(details.parameters)
            ),
            size,
            parameters: details.parameters,
        })
    }
}

/// A model's size as people name it: `135M`, `0.5B`, `7B`.
fn size_label(parameters: u64) -> String {
    let p = parameters as f64;
    if p >= 1e9 {
        let b = p / 1e9;
        if b >= 3.0 {
            format!("{b:.0}B")
        } else {
            format!("{b:.1}B")
        }
    } else {
        format!("{:.0}M", p / 1e6)
    }
}

/// One measured test, with llama-bench's field names (and ours:
/// `device`, `kernels`, `load_ms`, `peak_rss_bytes`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// abridge's version.
    pub build_version: String,
    /// The CPU's name.
    pub cpu_info: String,
    /// `CPU`, `CUDA` or `Metal`.
    pub backends: String,
    /// The model file.
    pub model_filename: String,
    /// Architecture, size and quantization.
    pub model_type: String,
    /// Bytes of tensor data.
    pub model_size: u64,
    /// Number of weights.
    pub model_n_params: u64,
    /// Tokens per forward pass over a prompt.
    pub n_batch: usize,
    /// Tokens per forward pass over a prompt (abridge has one batch size).
    pub n_ubatch: usize,
    /// Worker threads.
    pub n_threads: usize,
    /// The cache's key type.
    pub type_k: String,
    /// The cache's value type.
    pub type_v: String,
    /// Whether the weights are read from a memory map.
    pub use_mmap: bool,
    /// Prompt tokens (0 for a generation test).
    pub n_prompt: usize,
    /// Generated tokens (0 for a prompt test).
    pub n_gen: usize,
    /// Tokens in the context before the test.
    pub n_depth: usize,
    /// When the row was made, ISO 8601 in UTC.
    pub test_time: String,
    /// Mean nanoseconds of a repetition.
    pub avg_ns: u64,
    /// Their sample standard deviation.
    pub stddev_ns: u64,
    /// Mean tokens/s.
    pub avg_ts: f64,
    /// Their sample standard deviation.
    pub stddev_ts: f64,
    /// Nanoseconds of each repetition.
    pub samples_ns: Vec<u64>,
    /// Tokens/s of each repetition.
    pub samples_ts: Vec<f64>,
    /// Where the model ran (`cpu`, `cuda:0`).
    pub device: String,
    /// `native` or `generic` (see [`crate::Kernels`]).
    pub kernels: String,
    /// Milliseconds the model took to load.
    pub load_ms: u64,
    /// The process's peak resident memory so far, where the system says it.
    pub peak_rss_bytes: Option<u64>,
}

impl Row {
    /// The row of `samples`, measured on `model`.
    pub fn new(model: &Model, facts: &ModelFacts, samples: &Samples) -> Self {
        let ns: Vec<f64> = samples.nanos.iter().map(|&n| n as f64).collect();
        let location = model.device().location();
        let backends = match location {
            candle_core::DeviceLocation::Cpu => "CPU",
            candle_core::DeviceLocation::Cuda { .. } => "CUDA",
            candle_core::DeviceLocation::Metal { .. } => "Metal",
        };
        Self {
            build_version: env!("CARGO_PKG_VERSION").into(),
            cpu_info: cpu_name().unwrap_or_default(),
            backends: backends.into(),
            model_filename: facts.filename.clone(),
            model_type: facts.kind.clone(),
            model_size: facts.size,
            model_n_params: facts.parameters,
            n_batch: PROMPT_CHUNK,
            n_ubatch: PROMPT_CHUNK,
            n_threads: model.threads(),
            type_k: "f16".into(),
            type_v: "f16".into(),
            use_mmap: true,
            n_prompt: samples.test.prompt,
            n_gen: samples.test.generated,
            n_depth: samples.test.depth,
            test_time: iso8601(SystemTime::now()),
            avg_ns: mean(&ns).round() as u64,
            stddev_ns: stddev(&ns).round() as u64,
            avg_ts: samples.mean(),
            stddev_ts: samples.stddev(),
            samples_ns: samples.nanos.clone(),
            samples_ts: samples.tokens_per_second(),
            device: crate::device::name(model.device()),
            kernels: model.kernels().name().into(),
            load_ms: u64::try_from(model.info().load_time.as_millis()).unwrap_or(u64::MAX),
            peak_rss_bytes: peak_rss_bytes(),
        }
    }

    /// llama-bench's name for the test (`pp512 @ d4096`).
    pub fn test_name(&self) -> String {
        Test {
            prompt: self.n_prompt,
            generated: self.n_gen,
            depth: self.n_depth,
        }
        .name()
    }
}

/// How [`write`] prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Markdown table, as llama-bench prints by default.
    Markdown,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    JsonLines,
    /// A header line and one line per row; lists are space-separated.
    Csv,
}

impl Format {
    /// `md`, `json`, `jsonl` or `csv`, as llama-bench's `-o` reads them.
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "md" => Ok(Self::Markdown),
            "json" => Ok(Self::Json),
            "jsonl" => Ok(Self::JsonLines),
            "csv" => Ok(Self::Csv),
            other => Err(Error::InvalidOption(format!(
                "unknown output format `{other}`; expected md, json, jsonl or csv"
            ))),
        }
    }
}

/// Writes `rows` to `out` in `format`.
pub fn write(rows: &[Row], format: Format, out: &mut impl Write) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, rows).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::JsonLines => {
            for row in rows {
                serde_json::to_writer(&mut *out, row).map_err(std::io::Error::from)?;
                writeln!(out)?;
            }
        }
        Format::Csv => write_csv(rows, out)?,
        Format::Markdown => write_markdown(rows, out)?,
    }
    Ok(())
}

fn write_markdown(rows: &[Row], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "| model | size | params | backend | threads | test | t/s | load ms | peak RSS |"
    )?;
    writeln!(
        out,
        "| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: | ------: | ---------: |"
    )?;
    const GIB: f64 = (1u64 << 30) as f64;
    for r in rows {
        let peak = r
            .peak_rss_bytes
            .map_or_else(|| "?".into(), |b| format!("{:.2} GiB", b as f64 / GIB));
        writeln!(
            out,
            "| {} | {:.2} GiB | {:.2} {} | {} | {} | {} | {:.2} ± {:.2} | {} | {peak} |",
            r.model_type,
            r.model_size as f64 / GIB,
            if r.model_n_params >= 1_000_000_000 {
                r.model_n_params as f64 / 1e9
            } else {
                r.model_n_params as f64 / 1e6
            },
            if r.model_n_params >= 1_000_000_000 {
                "B"
            } else {
                "M"
            },
            r.backends,
            r.n_threads,
            r.test_name(),
            r.avg_ts,
            r.stddev_ts,
            r.load_ms,
        )?;
    }
    Ok(())
}

fn write_csv(rows: &[Row], out: &mut impl Write) -> std::io::Result<()> {
    for (i, row) in rows.iter().enumerate() {
        let value = serde_json::to_value(row).map_err(std::io::Error::from)?;
        let fields = value
            .as_object()
            .ok_or_else(|| std::io::Error::other("a bench row did not serialize to an object"))?;
        if i == 0 {
            let header: Vec<&str> = fields.keys().map(String::as_str).collect();
            writeln!(out, "{}", header.join(","))?;
        }
        let cells: Vec<String> = fields.values().map(csv_cell).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

/// A value as a CSV cell: text quoted (quotes doubled), lists as quoted
/// space-separated values (as llama-bench writes its samples), null empty.
fn csv_cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match v {
        Value::Null => String::new(),
        Value::String(s) => quote(s),
        Value::Array(items) => quote(
            &items
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => other.to_string(),
    }
}

/// The CPU's model name, from `/proc/cpuinfo` where there is one.
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
}

/// The process's peak resident memory (`VmHWM`), where Linux says it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Starts the peak resident memory count again from the current size, so the
/// peak of one model's load and run is not that of an earlier one; returns
/// whether the system allowed it (Linux's `clear_refs`).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `2026-12-01T14:02:03Z`.
fn iso8601(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's days-to-civil algorithm); the server's timestamps use it too.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_deviation_and_median_of_samples() {
        let s = Samples {
            test: Test {
                prompt: 10,
                generated: 0,
                depth: 0,
            },
            // 10, 20 and 40 tokens/s.
            nanos: vec![1_000_000_000, 500_000_000, 250_000_000],
        };
        assert_eq!(s.tokens_per_second(), [10.0, 20.0, 40.0]);
        assert!((s.mean() - 70.0 / 3.0).abs() < 1e-9);
        assert!((s.stddev() - 15.275_252_316).abs() < 1e-6, "{}", s.stddev());
        assert_eq!(s.median(), 20.0);
        let one = Samples {
            nanos: vec![1_000_000_000],
            ..s
        };
        assert_eq!(one.stddev(), 0.0);
    }

    #[test]
    fn matrix_skips_zero_sizes_and_names_depths() {
        assert!(Test::matrix(&[0], &[0], &[0, 64]).is_empty());
        let tests = Test::matrix(&[16, 32], &[4], &[64]);
        let names: Vec<String> = tests.iter().map(Test::name).collect();
        assert_eq!(names, ["pp16 @ d64", "pp32 @ d64", "tg4 @ d64"]);
        assert_eq!(tests[2].tokens(), 4);
    }

    #[test]
    fn sizes_are_labelled_as_people_name_them() {
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(494_032_768), "494M");
        assert_eq!(size_label(1_543_714_304), "1.5B");
        assert_eq!(size_label(7_241_732_096), "7B");
    }

    #[test]
    fn dates_are_iso_8601_utc() {
        let at = |s: u64| iso8601(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_137_323), "2026-12-01T15:02:03Z");
    }

    #[test]
    fn csv_cells_quote_text_and_join_lists() {
        use serde_json::json;
        assert_eq!(csv_cell(&json!("a \"b\", c")), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_cell(&json!([1, 2.5])), "\"1 2.5\"");
        assert_eq!(csv_cell(&json!(null)), "");
        assert_eq!(csv_cell(&json!(7)), "7");
    }

    #[test]
    fn formats_are_read_by_llama_bench_names() {
        assert_eq!(Format::by_name("jsonl").unwrap(), Format::JsonLines);
        let err = Format::by_name("sql").unwrap_err().to_string();
        assert!(err.contains("md, json, jsonl or csv"), "{err}");
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
