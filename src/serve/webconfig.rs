//! The web-config file of the Prometheus exporter toolkit (the subset portdoctor supports):
//!
//! ```yaml
//! tls_server_config:          # optional: serve HTTPS
//!   cert_file: server.crt     # PEM; relative paths are relative to this file
//!   key_file: server.key
//! basic_auth_users:           # optional: user → bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')
//!   prometheus: $2y$10$...
//! ```
//!
//! Unknown keys are refused (a typo must not silently turn authentication off).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read the web config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

impl WebConfig {
    /// Parses YAML text; relative TLS file paths are resolved against `base` (the file's folder).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // An empty file is an empty config.
        let mut cfg: WebConfig = if text.trim().is_empty() {
            WebConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        for (user, hash) in &cfg.basic_auth_users {
            if user.contains(':') {
                return Err(invalid(format!("user name {user:?} must not contain ':'")));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(format!(
                    "the password of {user:?} is not a bcrypt hash ($2y$…); make one with `htpasswd -nBC 10 \"\" | tr -d ':'`"
                )));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut cfg.tls_server_config {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn auth_required(&self) -> bool {
        !self.basic_auth_users.is_empty()
    }
}

/// User and password from an `Authorization: Basic …` header value; `None` if malformed.
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, b64) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Whether `user`/`pass` match the config (bcrypt; slow on purpose: call it off the event loop).
pub fn verify(cfg: &WebConfig, user: &str, pass: &str) -> bool {
    // Unknown users still cost one hash of the same cost, so timing does not tell which users
    // exist.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = cfg.basic_auth_users.get(user) {
        bcrypt::verify(pass, hash).unwrap_or(false)
    } else {
        let dummy = DUMMY.get_or_init(|| bcrypt::hash("-", 10).unwrap_or_default());
        let _ = bcrypt::verify(pass, dummy);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(p: &str) -> String {
        bcrypt::hash(p, 4).expect("bcrypt hash")
    }

    #[test]
    fn parses_toolkit_format_and_resolves_paths() {
        let h = hash("secret");
        let text = format!(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: /abs/k.pem\nbasic_auth_users:\n  prom: {h}\n"
        );
        let cfg = WebConfig::parse(&text, Path::new("/etc/pd/web.yml")).expect("valid");
        let tls = cfg.tls_server_config.clone().expect("tls");
        assert_eq!(tls.cert_file, Path::new("/etc/pd/c.pem"));
        assert_eq!(tls.key_file, Path::new("/abs/k.pem"));
        assert!(verify(&cfg, "prom", "secret"));
        assert!(!verify(&cfg, "prom", "wrong"));
        assert!(!verify(&cfg, "nobody", "secret"));
    }

    #[test]
    fn refuses_typos_and_plain_passwords() {
        let p = Path::new("web.yml");
        assert!(WebConfig::parse("basic_auth_user:\n  a: b\n", p).is_err());
        assert!(WebConfig::parse("basic_auth_users:\n  a: plain\n", p).is_err());
        assert_eq!(
            WebConfig::parse("", p).expect("empty"),
            WebConfig::default()
        );
    }

    #[test]
    fn basic_header() {
        // "prom:se:cret" — the password may hold colons.
        assert_eq!(
            parse_basic(b"Basic cHJvbTpzZTpjcmV0"),
            Some(("prom".into(), "se:cret".into()))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic"), None);
    }
}
