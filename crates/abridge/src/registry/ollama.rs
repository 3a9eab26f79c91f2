//! Ollama's model store: manifests naming the blob that holds each model's
//! GGUF file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Places;

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
