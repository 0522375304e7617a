//! API keys: given inline or in a file that is read again when it
//! changes, so keys rotate without a restart. A request shows its key as
//! `Authorization: apikey KEY` or `X-API-Key: KEY`; keys are compared in
//! constant time.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::config::{ApiKey, Config, ConfigError};
use crate::metrics::Metrics;

use super::Api;
use super::error::ApiError;

/// How often, at most, the keys file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);

/// The name of the key a request was authenticated with.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Arc<str>);

/// The caller's name when the API is open (no key configured, loopback,
/// dev mode).
const OPEN_CALLER: &str = "dev";

/// Every key the API takes.
#[derive(Debug)]
pub struct ApiKeys {
    inline: Vec<ApiKey>,
    file: Option<KeyFile>,
    /// No key is needed (see [`Config::http_open`]).
    open: bool,
}

/// A keys file and what was last read from it.
#[derive(Debug)]
struct KeyFile {
    path: PathBuf,
    recheck: Duration,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    /// When the modification time was last looked at.
    checked: Instant,
    /// The modification time of what `keys` were read from (or of the
    /// version that failed to parse, so it is reported once).
    modified: Option<SystemTime>,
    keys: Arc<[ApiKey]>,
}

impl ApiKeys {
    /// The keys `config` names, the file read now: a missing or bad file
    /// is an error at start.
    pub fn from_config(config: &Config) -> Result<ApiKeys, ConfigError> {
        let inline = config.inline_api_keys()?;
        let file = if config.api_keys_file.as_os_str().is_empty() {
            None
        } else {
            Some(KeyFile::open(config.api_keys_file.clone(), RECHECK)?)
        };
        Ok(ApiKeys {
            inline,
            file,
            open: config.http_open(),
        })
    }

    /// Whether requests need no key.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The name of the key equal to `presented`, if one is. Every key is
    /// compared, each in constant time, so the time taken says nothing of
    /// how much of a key matched.
    pub fn check(&self, presented: &[u8]) -> Option<Arc<str>> {
        let from_file = self.file.as_ref().map(|f| f.keys());
        let mut found: Option<&ApiKey> = None;
        for key in self
            .inline
            .iter()
            .chain(from_file.iter().flat_map(|k| k.iter()))
        {
            let equal: bool = key.key.ct_eq(presented).into();
            if equal && found.is_none() {
                found = Some(key);
            }
        }
        found.map(|k| Arc::from(k.name.as_str()))
    }
}

impl KeyFile {
    fn open(path: PathBuf, recheck: Duration) -> Result<KeyFile, ConfigError> {
        let (modified, keys) = read(&path).map_err(ConfigError::Invalid)?;
        Ok(KeyFile {
            path,
            recheck,
            state: Mutex::new(FileState {
                checked: Instant::now(),
                modified,
                keys: keys.into(),
            }),
        })
    }

    /// The file's keys, read again first if it changed since it was last
    /// read and the last look is `recheck` old.
    fn keys(&self) -> Arc<[ApiKey]> {
        let modified = {
            let mut state = self.lock();
            if state.checked.elapsed() < self.recheck {
                return state.keys.clone();
            }
            state.checked = Instant::now();
            state.modified
        };
        // A stat a second at most: cheap enough to do on the request.
        let now = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if now == modified {
            return self.lock().keys.clone();
        }
        let mut state = self.lock();
        match read(&self.path) {
            Ok((read_at, keys)) => {
                info!(path = %self.path.display(), keys = keys.len(), "API keys file read again");
                state.modified = read_at;
                state.keys = keys.into();
            }
            Err(e) => {
                // The keys in force stay: a half-written file must not
                // lock every backend out.
                warn!(error = %e, "API keys file not taken; the previous keys stay in force");
                state.modified = now;
            }
        }
        state.keys.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        // Nothing can be left half-updated by a panic under this lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads and parses a keys file, with its modification time.
fn read(path: &std::path::Path) -> Result<(Option<SystemTime>, Vec<ApiKey>), String> {
    let shown = path.display();
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API keys file {shown}: {e}"))?;
    let keys = ApiKey::parse_file(&text).map_err(|e| format!("API keys file {shown}: {e}"))?;
    Ok((modified, keys))
}

/// The key a request shows, if any.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.as_bytes());
    }
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, key) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"apikey")
        .then(|| key.trim_ascii())
}

/// Lets a request through with its [`Caller`] if it shows a valid key;
/// answers 401 otherwise.
pub(super) async fn require_key(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let caller = if api.keys.is_open() {
        Some(Arc::from(OPEN_CALLER))
    } else {
        match presented(req.headers()) {
            Some(key) => api.keys.check(key),
            None => {
                Metrics::add(&api.hub.metrics.api_auth_failures, 1);
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "send the API key as `Authorization: apikey KEY` or `X-API-Key: KEY`",
                )
                .into_response();
            }
        }
    };
    match caller {
        Some(name) => {
            req.extensions_mut().insert(Caller(name));
            next.run(req).await
        }
        None => {
            Metrics::add(&api.hub.metrics.api_auth_failures, 1);
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_api_key",
                "the API key is not one this server takes",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_file_keys_match_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# ops\norders=bbbbbbbbbbbbbbbb\n").unwrap();
        let keys = ApiKeys {
            inline: vec![ApiKey::parse("inline=aaaaaaaaaaaaaaaa").unwrap()],
            file: Some(KeyFile::open(path, RECHECK).unwrap()),
            open: false,
        };
        assert_eq!(keys.check(b"aaaaaaaaaaaaaaaa").as_deref(), Some("inline"));
        assert_eq!(keys.check(b"bbbbbbbbbbbbbbbb").as_deref(), Some("orders"));
        assert_eq!(
            keys.check(b"bbbbbbbbbbbbbbb"),
            None,
            "a prefix is not the key"
        );
        assert_eq!(keys.check(b""), None);
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "orders=bbbbbbbbbbbbbbbb\n").unwrap();
        let file = KeyFile::open(path.clone(), Duration::ZERO).unwrap();
        let touch = |text: &str, secs: u64| {
            std::fs::write(&path, text).unwrap();
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        let names = |file: &KeyFile| -> Vec<String> {
            file.keys().iter().map(|k| k.name.clone()).collect()
        };
        touch("billing=cccccccccccccccc\n", 1_000_000);
        assert_eq!(names(&file), ["billing"]);
        touch("half a line", 2_000_000);
        assert_eq!(names(&file), ["billing"], "a bad file is not taken");
        touch(
            "billing=cccccccccccccccc\norders=dddddddddddddddd\n",
            3_000_000,
        );
        assert_eq!(names(&file), ["billing", "orders"]);
    }

    #[test]
    fn the_key_is_read_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(header::AUTHORIZATION, "ApiKey  k1 ".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"k1"[..]));
        h.insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"k2"[..]));
    }
}
