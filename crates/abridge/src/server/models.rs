//! The models the server holds: loaded on first use, shared by every
//! request that names them, unloaded after their keep-alive.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::model::{Model, ModelOptions};
use crate::registry::{self, Catalogue, Location, Places};

use super::api::KeepAlive;
use super::http::ApiError;

/// A model in memory.
pub(crate) struct Resident {
    /// The name it is listed under (the catalogue's, or as requested).
    pub name: String,
    pub model: Arc<Model>,
    /// When it is unloaded if no request uses it (`None`: never).
    pub expires: Option<Instant>,
    /// Requests using it now.
    pub active: usize,
    /// Asked to unload while in use: it goes when the last request ends.
    pub unload_when_idle: bool,
}

pub(crate) struct Models {
    catalogue: Catalogue,
    options: ModelOptions,
    allow_paths: bool,
    default_keep_alive: KeepAlive,
    resident: Mutex<HashMap<PathBuf, Resident>>,
    /// One load at a time: two requests for a model not yet loaded load it once.
    loading: tokio::sync::Mutex<()>,
}

/// A request's hold on a loaded model; when dropped, the model's keep-alive
/// starts counting.
pub(crate) struct Lease {
    models: Arc<Models>,
    path: PathBuf,
    keep_alive: KeepAlive,
    pub name: String,
    pub model: Arc<Model>,
    /// Time the load took (zero when it was already loaded).
    pub load_time: Duration,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut resident = self.models.lock();
        let unload = match resident.get_mut(&self.path) {
            Some(r) => {
                r.active = r.active.saturating_sub(1);
                r.expires = expiry(self.keep_alive);
                r.active == 0
                    && (r.unload_when_idle || self.keep_alive == KeepAlive::For(Duration::ZERO))
            }
            None => false,
        };
        if unload {
            resident.remove(&self.path);
        }
    }
}

/// Whether a model name is written as a file path (absolute, relative to a
/// directory, in the home directory, or a `.gguf` file).
fn looks_like_path(name: &str) -> bool {
    name.starts_with(['/', '\\', '.', '~'])
        || name.ends_with(".gguf")
        || name.contains('\\')
        || name.split('/').any(|part| part == "..")
        || std::path::Path::new(name).is_absolute()
}

fn expiry(keep_alive: KeepAlive) -> Option<Instant> {
    match keep_alive {
        KeepAlive::For(d) => Some(Instant::now() + d),
        KeepAlive::Forever => None,
    }
}

impl Models {
    pub fn new(
        catalogue: Catalogue,
        options: ModelOptions,
        allow_paths: bool,
        default_keep_alive: KeepAlive,
    ) -> Self {
        Self {
            catalogue,
            options,
            allow_paths,
            default_keep_alive,
            resident: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Resident>> {
        // A panic elsewhere cannot leave the map half-written: every update
        // is one insert, remove or field store.
        self.resident.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file a model name stands for, through the catalogue, abridge's
    /// directory and Ollama's store; a file path only with `--allow-paths`.
    pub fn locate(&self, name: &str) -> Result<(String, PathBuf), ApiError> {
        if name.trim().is_empty() {
            return Err(ApiError::bad_request("model is required"));
        }
        let refused = || {
            ApiError::bad_request(format!(
                "model \"{name}\" is a file path; the server resolves model names only \
                 through its registry (start it with --allow-paths to accept paths)"
            ))
        };
        // Refused before anything looks at the disk, so the answer does not
        // tell whether such a file exists.
        if !self.allow_paths && looks_like_path(name) {
            return Err(refused());
        }
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("model \"{name}\" not found, try pulling it first"),
            )
        };
        let places = Places::from_env();
        // Clients add Ollama's default tag to names that have none.
        let bare = name.strip_suffix(":latest").unwrap_or(name);
        let found = registry::locate(name, &self.catalogue, &places)
            .or_else(|e| registry::locate(bare, &self.catalogue, &places).map_err(|_| e));
        let found = found.map_err(|e| match e {
            crate::Error::ModelNotFound { .. } => not_found(),
            other => ApiError::from(other),
        })?;
        // A relative name that happens to be a file in the server's
        // directory: as unknown as any other name.
        if found.location == Location::Path && !self.allow_paths {
            return Err(not_found());
        }
        let listed = self
            .catalogue
            .find(bare)
            .map_or_else(|| name.to_owned(), |e| e.name.clone());
        Ok((listed, found.path))
    }

    /// The model `name`, loaded if it is not yet, held until the lease is
    /// dropped.
    pub async fn lease(
        self: &Arc<Self>,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, ApiError> {
        let (listed, path) = self.locate(name)?;
        let keep_alive = keep_alive.unwrap_or(self.default_keep_alive);
        let start = Instant::now();
        if let Some(lease) = self.take(&path, keep_alive, Duration::ZERO) {
            return Ok(lease);
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Some(lease) = self.take(&path, keep_alive, Duration::ZERO) {
            return Ok(lease);
        }
        let catalogue = self.catalogue.clone();
        let options = self.options.clone();
        let spec = if self.catalogue.find(&listed).is_some() {
            listed.clone()
        } else {
            path.display().to_string()
        };
        let model = tokio::task::spawn_blocking(move || registry::load(&spec, &catalogue, options))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("loading failed: {e}"),
                )
            })??;
        let model = Arc::new(model);
        // Inserted as in use, so the reaper cannot take it before the lease.
        self.lock().insert(
            path.clone(),
            Resident {
                name: listed.clone(),
                model: Arc::clone(&model),
                expires: expiry(keep_alive),
                active: 1,
                unload_when_idle: false,
            },
        );
        Ok(Lease {
            models: Arc::clone(self),
            path,
            keep_alive,
            name: listed,
            model,
            load_time: start.elapsed(),
        })
    }

    fn take(
        self: &Arc<Self>,
        path: &PathBuf,
        keep_alive: KeepAlive,
        load_time: Duration,
    ) -> Option<Lease> {
        let mut resident = self.lock();
        let r = resident.get_mut(path)?;
        r.active += 1;
        Some(Lease {
            models: Arc::clone(self),
            path: path.clone(),
            keep_alive,
            name: r.name.clone(),
            model: Arc::clone(&r.model),
            load_time,
        })
    }

    /// Unloads `name` now if no request uses it (`keep_alive: 0` with no
    /// prompt); returns whether it was loaded.
    pub fn unload(&self, name: &str) -> Result<bool, ApiError> {
        let (_, path) = self.locate(name)?;
        let mut resident = self.lock();
        match resident.get_mut(&path) {
            Some(r) if r.active > 0 => {
                r.unload_when_idle = true;
                Ok(true)
            }
            Some(_) => Ok(resident.remove(&path).is_some()),
            None => Ok(false),
        }
    }

    /// Drops every idle model whose keep-alive has passed.
    pub fn reap(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|_, r| r.active > 0 || r.expires.is_none_or(|t| t > now));
    }

    /// What is loaded: name, file size, when it expires, and the model.
    pub fn loaded(&self) -> Vec<(String, Option<Instant>, Arc<Model>)> {
        let mut out: Vec<_> = self
            .lock()
            .values()
            .map(|r| (r.name.clone(), r.expires, Arc::clone(&r.model)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_told_from_model_names() {
        for path in [
            "/etc/passwd",
            "./m.gguf",
            "../x",
            "~/m",
            "m.gguf",
            "a/../b",
            "C:\\m",
        ] {
            assert!(looks_like_path(path), "{path}");
        }
        for name in [
            "smollm2",
            "mistral:7b-instruct-v0.2-q4_K_M",
            "hf.co/org/repo:Q4_K_M",
            "library/qwen2.5:0.5b",
        ] {
            assert!(!looks_like_path(name), "{name}");
        }
    }
}
