//! A loaded model: the network, its tokenizer and its chat template, from one
//! GGUF file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kernels::pool::Pool;
use crate::tokenizer::template::{Builtin, ChatTemplate};
use crate::tokenizer::{TokenId, Tokenizer};

pub(crate) mod arch;
pub(crate) mod kv_cache;

pub use arch::Architecture;
pub(crate) use kv_cache::common_prefix;
pub use kv_cache::{CacheShape, KvCache};

/// A causal language model with explicit key/value state.
///
/// The state lives in a [`KvCache`] the caller owns, so one loaded model can
/// serve several independent sequences.
pub trait CausalLm: Send + Sync {
    /// Processes `tokens` after what `cache` holds, appends them to it, and
    /// returns the logits for the next token as a `(vocab,)` tensor.
    fn forward(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor>;

    /// What the cache must hold per position.
    fn cache_shape(&self) -> CacheShape;

    /// Rows of the embedding matrix.
    fn vocab_size(&self) -> usize;

    /// The context length the model was trained for.
    fn trained_context(&self) -> usize;
}

/// A number of token positions: the size of a context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ContextWindow(usize);

impl ContextWindow {
    /// A window of `tokens` positions; `None` for zero.
    pub fn new(tokens: usize) -> Option<Self> {
        (tokens > 0).then_some(Self(tokens))
    }

    /// The number of positions.
    pub fn tokens(self) -> usize {
        self.0
    }
}

/// The context window used when none is asked for: large enough for a long
/// article, small enough that the cache of a 7B model stays around 1 GiB.
pub const DEFAULT_CONTEXT: usize = 8192;

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    threads: Option<usize>,
    device: Device,
    kernels: Kernels,
    tokenizer_json: Option<PathBuf>,
    template: Option<Builtin>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            threads: None,
            device: Device::Cpu,
            kernels: Kernels::Native,
            tokenizer_json: None,
            template: None,
        }
    }
}

impl ModelOptions {
    /// Default options: CPU, one thread per core, the tokenizer from the file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of CPU threads for the forward pass (default: every core).
    ///
    /// Both the model's kernels and candle's parallel operations run on
    /// this many threads, the caller's among them.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// The device to run on.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The device to run on, by name (see [`crate::device::by_name`]:
    /// `auto`, `cpu`, `cuda:N`, `metal`).
    ///
    /// ```
    /// let options = abridge::ModelOptions::new().device_by_name("cpu")?;
    /// # Ok::<(), abridge::Error>(())
    /// ```
    pub fn device_by_name(self, name: &str) -> Result<Self> {
        Ok(self.device(crate::device::by_name(name)?))
    }

    /// Which kernels the forward pass runs (default [`Kernels::Native`]).
    ///
    /// ```
    /// use abridge::{Kernels, ModelOptions};
    /// let options = ModelOptions::new().kernels(Kernels::by_name("generic")?);
    /// # Ok::<(), abridge::Error>(())
    /// ```
    pub fn kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Prompt with one of abridge's own chat templates instead of the file's
    /// (for example Ollama's Mistral prompt, which `models.toml` names for
    /// `mistral:7b-instruct-v0.2-q4_K_M`).
    pub fn chat_template(mut self, template: Builtin) -> Self {
        self.template = Some(template);
        self
    }

    /// Use this `tokenizer.json` instead of the vocabulary in the GGUF file.
    /// Without it, a `tokenizer.json` next to the model file is used when present.
    pub fn tokenizer_json(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer_json = Some(path.into());
        self
    }
}

/// Which kernels the forward pass runs.
///
/// A GPU always runs candle's device-generic operations. On the CPU abridge
/// has faster kernels of its own for some of the work; selecting
/// [`Kernels::Generic`] there runs exactly the arithmetic a GPU would, which
/// is how the GPU path is checked on a machine without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// abridge's own CPU kernels where they apply (matrix products of the
    /// legacy block types, attention over the f16 cache), candle's elsewhere.
    /// Off the CPU, the same as [`Kernels::Generic`].
    #[default]
    Native,
    /// candle's device-generic operations only.
    Generic,
}

impl Kernels {
    /// The names [`Kernels::by_name`] accepts.
    pub const NAMES: &str = "native, generic";

    /// `native` or `generic`.
    pub fn by_name(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(Self::Native),
            "generic" => Ok(Self::Generic),
            other => Err(Error::InvalidOption(format!(
                "unknown kernels `{other}` (expected {})",
                Self::NAMES
            ))),
        }
    }

    /// The name [`Kernels::by_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    /// Whether our own CPU kernels run on `device`.
    pub(crate) fn native_on(self, device: &Device) -> bool {
        self == Self::Native && device.is_cpu()
    }
}

/// Facts about a loaded model, for display.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: String,
    /// File size in bytes.
    pub file_size: u64,
    /// Context length the model was trained for.
    pub trained_context: usize,
    /// Time taken to load.
    pub load_time: Duration,
}

/// A model ready to run.
pub struct Model {
    info: ModelInfo,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    network: Box<dyn CausalLm>,
    /// Where candle's own parallel operations (norms, rotations) run.
    pool: rayon::ThreadPool,
    /// Where our kernels split their work: the same number of threads.
    kernel_pool: Pool,
    device: Device,
    kernels: Kernels,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

impl Model {
    /// Loads a GGUF model with default options.
    ///
    /// ```no_run
    /// let model = abridge::Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
    /// println!("{}", model.info().architecture);
    /// # Ok::<(), abridge::Error>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, ModelOptions::default())
    }

    /// Loads a GGUF model.
    pub fn load_with(path: impl AsRef<Path>, options: ModelOptions) -> Result<Self> {
        let start = Instant::now();
        let path = path.as_ref();
        let gguf = GgufFile::open(path)?;
        // Fail on an unknown architecture before the slower tokenizer build.
        Architecture::from_gguf_name(gguf.architecture()?)?;
        let beside = path.with_file_name("tokenizer.json");
        let tokenizer = match options.tokenizer_json.as_deref() {
            Some(json) => Tokenizer::from_json_file(json, &gguf)?,
            None if beside.is_file() => Tokenizer::from_json_file(&beside, &gguf)?,
            None => Tokenizer::from_gguf(&gguf)?,
        };
        // A GPU holds its own copy of the weights: refuse before uploading
        // them when it has no room (the CPU maps the file instead).
        if !options.device.is_cpu()
            && let Some(available) = available_memory(&options.device)
            && gguf.file_size() > available
        {
            return Err(Error::OutOfMemory {
                what: format!(
                    "the weights of {} on {}",
                    path.display(),
                    crate::device::name(&options.device)
                ),
                needed: gguf.file_size(),
                available,
            });
        }
        let mut pool = rayon::ThreadPoolBuilder::new();
        if let Some(n) = options.threads {
            pool = pool.num_threads(n);
        }
        let pool = pool
            .build()
            .map_err(|e| Error::InvalidOption(format!("cannot start worker threads: {e}")))?;
        let kernel_pool = Pool::new(pool.current_num_threads())
            .map_err(|e| Error::InvalidOption(format!("cannot start worker threads: {e}")))?;
        let native = options.kernels.native_on(&options.device);
        // Weights are repacked for our kernels on the model's threads.
        let network = kernel_pool.install(|| arch::load(&gguf, &options.device, native))?;
        if tokenizer.vocab_size() > network.vocab_size() {
            return Err(Error::Tokenizer(format!(
                "the vocabulary has {} tokens but the model's embedding only {}",
                tokenizer.vocab_size(),
                network.vocab_size()
            )));
        }
        let template = match options.template {
            Some(builtin) => ChatTemplate::builtin(builtin, &tokenizer),
            None => ChatTemplate::for_model(&gguf, &tokenizer),
        };
        let info = ModelInfo {
            path: path.to_path_buf(),
            name: gguf
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            architecture: gguf.architecture()?.to_owned(),
            file_size: gguf.file_size(),
            trained_context: network.trained_context(),
            load_time: start.elapsed(),
        };
        Ok(Self {
            info,
            tokenizer,
            template,
            network,
            pool,
            kernel_pool,
            device: options.device,
            kernels: if native {
                Kernels::Native
            } else {
                Kernels::Generic
            },
        })
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The kernels the forward pass runs: [`Kernels::Generic`] on a GPU,
    /// whatever was asked for.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The context window to use when `requested` may be unset: the request,
    /// or [`DEFAULT_CONTEXT`], never more than the model was trained for.
    pub fn context_window(&self, requested: Option<ContextWindow>) -> ContextWindow {
        let trained = self.info.trained_context;
        let tokens = requested.map_or(DEFAULT_CONTEXT.min(trained), |c| c.tokens());
        ContextWindow(tokens)
    }

    /// Bytes the key/value cache takes for `window` positions: context ×
    /// layers × key/value heads × (key + value size) × 2 bytes (f16).
    ///
    /// ```no_run
    /// # fn main() -> abridge::Result<()> {
    /// let model = abridge::Model::load("qwen2.5-0.5b-instruct-q4_k_m.gguf")?;
    /// let window = abridge::ContextWindow::new(8192).unwrap();
    /// println!("{} MiB", model.cache_bytes(window) >> 20);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cache_bytes(&self, window: ContextWindow) -> u64 {
        self.network.cache_shape().bytes(window.tokens())
    }

    /// Allocates a key/value cache for `window` positions, after checking that
    /// the machine has the memory for it.
    pub fn new_cache(&self, window: ContextWindow) -> Result<KvCache> {
        let trained = self.info.trained_context;
        if window.tokens() > trained {
            return Err(Error::ContextTooLarge {
                requested: window.tokens(),
                trained,
            });
        }
        check_cache_fits(
            window,
            &self.device,
            self.cache_bytes(window),
            available_memory(&self.device),
        )?;
        KvCache::new(self.network.cache_shape(), window.tokens(), &self.device)
    }

    /// Runs `tokens` through the network on the model's threads (see
    /// [`CausalLm::forward`]).
    pub fn forward(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        self.pool.install(|| {
            self.kernel_pool
                .install(|| self.network.forward(tokens, cache))
        })
    }
}

/// An error, before anything is allocated, when a cache of `bytes` would not
/// fit in `available` memory: better than the out-of-memory killer halfway
/// through a prompt.
fn check_cache_fits(
    window: ContextWindow,
    device: &Device,
    bytes: u64,
    available: Option<u64>,
) -> Result<()> {
    match available {
        Some(available) if bytes > available => Err(Error::OutOfMemory {
            what: match device {
                Device::Cpu => format!("the cache of a context of {} tokens", window.tokens()),
                gpu => format!(
                    "the cache of a context of {} tokens on {}",
                    window.tokens(),
                    crate::device::name(gpu)
                ),
            },
            needed: bytes,
            available,
        }),
        _ => Ok(()),
    }
}

/// Memory a cache on `device` can still take: the host's (see
/// [`host_memory`]), or a CUDA GPU's free memory; `None` where it cannot be
/// known.
fn available_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => host_memory(),
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => gpu
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64),
        _ => None,
    }
}

/// Memory this process can still take: `MemAvailable` from `/proc/meminfo`,
/// or less when the container's cgroup (v2, mounted at `/sys/fs/cgroup` as
/// a container sees it) caps it, where `MemAvailable` still shows the whole
/// machine.
fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let machine = mem_available(&meminfo)?;
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let capped = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => cgroup_headroom(&max, &current),
        _ => None,
    };
    Some(capped.map_or(machine, |c| c.min(machine)))
}

/// `MemAvailable` in bytes from the text of `/proc/meminfo`.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What a cgroup v2 limit leaves, from `memory.max` (bytes or `max`) and
/// `memory.current`; `None` when there is no limit.
fn cgroup_headroom(max: &str, current: &str) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let current: u64 = current.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_larger_than_memory_is_refused_with_the_figures() {
        let window = ContextWindow::new(32768).unwrap();
        let err = check_cache_fits(window, &Device::Cpu, 4 << 30, Some(1 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("32768 tokens") && err.contains("4.0 GiB") && err.contains("1.0 GiB"),
            "{err}"
        );
        assert!(check_cache_fits(window, &Device::Cpu, 1 << 30, Some(4 << 30)).is_ok());
        assert!(check_cache_fits(window, &Device::Cpu, 1 << 30, None).is_ok());
    }

    #[test]
    fn available_memory_is_read_from_meminfo_and_cgroup_limits() {
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_headroom("max\n", "123\n"), None);
        assert_eq!(cgroup_headroom("1000\n", "300\n"), Some(700));
        assert_eq!(cgroup_headroom("1000\n", "3000\n"), Some(0));
    }
}
