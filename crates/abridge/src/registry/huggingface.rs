//! The Hugging Face hub cache, in the layout `huggingface_hub` writes, so a
//! file fetched by other tools is found where it is.

use std::path::{Path, PathBuf};

use super::{HuggingFaceSource, env_dir, home};

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
