//! Named models: the `models.toml` catalogue, and finding a model on disk.
//!
//! A model is named by an Ollama-style tag (`smollm2:135m-instruct-q4_1`) or an
//! alias (`smollm2`), or given as a path. Nothing here touches the network:
//! downloading is [`pull`]'s job, and only when asked.
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

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{Model, ModelOptions};
use crate::tokenizer::template::Builtin;

mod catalogue;
mod huggingface;
mod ollama;
pub mod pull;

pub use catalogue::{Catalogue, HuggingFaceSource, ModelEntry, PypiSource};
pub use huggingface::{hf_cached_file, hf_hub_cache};
pub use ollama::{
    OLLAMA_LIBRARY, OLLAMA_MODEL_LAYER, OLLAMA_REGISTRY, OllamaModel, OllamaName, ollama_blob,
    ollama_models,
};

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
        return search.found.ok_or_else(|| not_found(entry, search.looked));
    }
    let looks_like_path = spec.ends_with(".gguf")
        || spec.starts_with(['.', '/', '~'])
        || spec.contains(std::path::MAIN_SEPARATOR) && OllamaName::parse(spec).is_none();
    if looks_like_path {
        return Err(Error::ModelNotFound {
            name: spec.into(),
            reason: format!("model file {spec} does not exist"),
            looked: Vec::new(),
            catalogued: false,
        });
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
    Err(Error::ModelNotFound {
        name: spec.into(),
        reason: format!(
            "`{spec}` is neither a file, nor a model in the catalogue (known models: {}), nor an Ollama model on this machine. \
             To use another model, give its path, or add it with a `huggingface` source to {user} and pull it",
            names.join(", "),
        ),
        looked,
        catalogued: false,
    })
}

/// The error for a catalogued model found nowhere: where it was looked for,
/// and where it can come from.
fn not_found(entry: &ModelEntry, looked: Vec<String>) -> Error {
    let how = match (&entry.huggingface, &entry.pypi) {
        (Some(hf), _) => format!(
            "it can be downloaded ({} from huggingface.co/{})",
            human_bytes(entry.size),
            hf.repo,
        ),
        (None, Some(pypi)) => format!("it ships inside PyPI wheels ({})", pypi.packages.join(", ")),
        (None, None) => format!(
            "the catalogue gives no download source: put the file in abridge's model directory as {}",
            entry.file
        ),
    };
    Error::ModelNotFound {
        name: entry.name.clone(),
        reason: format!("model `{}` is not on this machine; {how}", entry.name),
        looked,
        catalogued: true,
    }
}

/// The model to use: `requested` when given, else `$ABRIDGE_MODEL`, else the
/// catalogue's default.
pub fn model_name(requested: Option<&str>, catalogue: &Catalogue) -> String {
    requested
        .map(str::to_owned)
        .or_else(|| {
            std::env::var("ABRIDGE_MODEL")
                .ok()
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| catalogue.default.clone())
}

/// Loads the model `name` (a path, a catalogued name or alias, or an Ollama
/// tag) with no network, prompting it with the chat template the catalogue
/// names for it (Ollama's Mistral prompt for the default Mistral, so a
/// replayed request sees the prompt Ollama gave it).
///
/// ```no_run
/// use abridge::registry::{self, Catalogue};
/// let catalogue = Catalogue::load(None)?;
/// let model = registry::load("smollm2", &catalogue, abridge::ModelOptions::new())?;
/// # Ok::<(), abridge::Error>(())
/// ```
pub fn load(name: &str, catalogue: &Catalogue, mut options: ModelOptions) -> Result<Model> {
    let path = resolve(name, catalogue)?;
    if let Some(template) = catalogue.find(name).and_then(|m| m.template.as_deref()) {
        let builtin = Builtin::from_name(template).ok_or_else(|| {
            Error::Config(format!("model `{name}`: unknown template `{template}`"))
        })?;
        options = options.chat_template(builtin);
    }
    Model::load_with(path, options)
}

/// Downloads `name` when it is catalogued with a download source and is
/// nowhere on this machine; returns what was pulled, or `None` when nothing
/// had to be.
pub fn pull_if_missing(
    name: &str,
    catalogue: &Catalogue,
    options: &pull::PullOptions,
    report: impl FnMut(pull::PullEvent),
) -> Result<Option<pull::Pulled>> {
    if resolve(name, catalogue).is_ok() {
        return Ok(None);
    }
    match catalogue.find(name) {
        Some(entry) => pull::pull(entry, options, report).map(Some),
        None => Ok(None),
    }
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

/// One line of `abridge models list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// The model's name.
    pub name: String,
    /// Size in bytes (the catalogue's, or the file's).
    pub size: u64,
    /// Architecture (the catalogue's, or the file's when it can be read).
    pub arch: Option<String>,
    /// One line of description.
    pub description: String,
    /// Where the file is, when it is on this machine (serialized as
    /// `present`, `location` and `path`).
    #[serde(flatten, serialize_with = "found_fields")]
    pub found: Option<Found>,
    /// Whether the catalogue has it (otherwise it was found in Ollama's store).
    pub catalogued: bool,
}

fn found_fields<S: serde::Serializer>(
    found: &Option<Found>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(3))?;
    m.serialize_entry("present", &found.is_some())?;
    m.serialize_entry("location", &found.as_ref().map(|f| f.location.short()))?;
    m.serialize_entry(
        "path",
        &found.as_ref().map(|f| f.path.display().to_string()),
    )?;
    m.end()
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

/// Deletes a catalogued model (and any unfinished download of it) from
/// abridge's model directory; files in the Hugging Face cache or Ollama's
/// store are never touched. Returns the files deleted.
pub fn remove(entry: &ModelEntry, places: &Places) -> Result<Vec<PathBuf>> {
    let file = places.models_dir.join(&entry.file);
    let partial = places
        .models_dir
        .join(format!("{}{}", entry.file, pull::PARTIAL_SUFFIX));
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
        return Err(Error::ModelNotFound {
            name: entry.name.clone(),
            reason: format!(
                "model `{}` is not in abridge's model directory ({}){elsewhere}",
                entry.name,
                places.models_dir.display()
            ),
            looked: Vec::new(),
            catalogued: true,
        });
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::catalogue::{Layer, SHIPPED};
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
        assert!(err.contains("huggingface.co/org/tiny"), "{err}");

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
