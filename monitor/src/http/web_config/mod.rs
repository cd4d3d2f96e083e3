//! The web configuration file (`--web.config.file`): TLS, basic authentication, extra headers
//! and a rate limit for every endpoint, in the format of the Prometheus exporters
//! (prometheus/exporter-toolkit's `docs/web-configuration.md`), so that one file and one habit
//! serve node_exporter and this agent alike.
//!
//! * [`file`]: the YAML format, read strictly;
//! * [`tls`]: `tls_server_config` made into a rustls server configuration;
//! * [`auth`]: `basic_auth_users`, with bcrypt's work bounded;
//! * [`headers`], [`rate_limit`]: `http_server_config.headers` and `rate_limit`;
//! * [`watch`]: the thread that reads the file again when it (or a certificate) changes.
//!
//! A file that is broken at start stops the agent with an error naming the file and the key;
//! a file broken while the agent runs changes nothing: the last good configuration stays, one
//! line is logged and `egress_monitor_web_config_reloads_total{result="failure"}` counts it.

pub mod auth;
pub mod file;
pub mod headers;
pub mod rate_limit;
pub mod tls;
pub mod watch;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use axum::http::{HeaderName, HeaderValue};

pub use file::{FileFormat, RateLimitConfig};

/// A web configuration, checked and built.
pub struct WebConfig {
    /// Present when the file has a TLS section: every connection is TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub rate_limit: RateLimitConfig,
    /// The file and the files it names (certificates, keys, CAs), watched for changes.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// The file could not be used. Its message names the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
#[error("web configuration file {}: {problem}", path.display())]
pub struct WebConfigError {
    pub path: PathBuf,
    pub problem: String,
}

/// Reads, checks and builds the web configuration in `path`.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let error = |problem: String| WebConfigError {
        path: path.to_owned(),
        problem,
    };
    let bytes = file::read_small_file(path).map_err(|e| error(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| error("not UTF-8".into()))?;
    let parsed = file::parse(text).map_err(|e| error(e.to_string()))?;
    build(&parsed, path).map_err(error)
}

/// Checks and builds a parsed file; `path` is where it was read (relative paths are relative
/// to its directory).
pub fn build(parsed: &FileFormat, path: &Path) -> Result<WebConfig, String> {
    let headers = headers::check(&parsed.http_server_config.headers)?;
    auth::check_users(&parsed.basic_auth_users)?;
    let mut files = vec![path.to_owned()];
    let tls = if parsed.tls_server_config.is_enabled() {
        let built = tls::build(
            &parsed.tls_server_config,
            parsed.http_server_config.http2,
            path,
        )?;
        files.extend(built.files);
        Some(built.server)
    } else {
        None
    };
    Ok(WebConfig {
        tls,
        users: parsed.basic_auth_users.clone(),
        headers,
        rate_limit: parsed.rate_limit,
        files,
    })
}

/// The reloads of the file, by result, for `egress_monitor_web_config_reloads_total`.
#[derive(Default)]
pub struct Reloads {
    /// success, failure. Held for an increment or a read.
    counts: Mutex<[u64; 2]>,
}

impl Reloads {
    pub fn count(&self, ok: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts[usize::from(!ok)] += 1;
    }

    /// Appends the family in the text format.
    pub fn render(&self, out: &mut String) {
        let counts = *self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write!(
            out,
            "# HELP egress_monitor_web_config_reloads_total Times the web configuration file (--web.config.file) \
             was read again after a change, by result; on failure the last good configuration stays.\n\
             # TYPE egress_monitor_web_config_reloads_total counter\n\
             egress_monitor_web_config_reloads_total{{result=\"failure\"}} {}\n\
             egress_monitor_web_config_reloads_total{{result=\"success\"}} {}\n",
            counts[1], counts[0]
        );
    }
}

/// The configuration in force, shared by the watcher (which replaces it) and the server
/// (which reads it per connection and per request), with the state that outlives a reload.
#[derive(Clone)]
pub struct Live {
    /// The lock guards the swap of the `Arc`, held for a clone or a store, never during I/O.
    current: Arc<RwLock<Arc<WebConfig>>>,
    pub checker: Arc<auth::Checker>,
    pub limiter: Arc<rate_limit::Limiter>,
}

impl Live {
    pub fn new(config: WebConfig) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
            checker: Arc::default(),
            limiter: Arc::default(),
        }
    }

    pub fn current(&self) -> Arc<WebConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, config: WebConfig) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}
