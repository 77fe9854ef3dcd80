//! Credentials (Calico Enterprise licence, registry pull secret) read from files named by env vars, never shown.

use crate::profile::SecretKind;
use crate::error::HarnessError;
use anyhow::{Context, Result};
use std::fmt;

/// A credential's text: Debug and Display print only its size, so it cannot leak into logs, plans or diagnostics.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps text that must never be printed.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text, for the one place that sends it to the API server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted, {} bytes>)", self.0.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

/// Reads the file named by env var `env`; an unset variable is a usage error (exit 2) that says what to set.
pub fn read_from_env(kind: SecretKind, env: &str) -> Result<Secret> {
    read_from(kind, env, std::env::var_os(env))
}

fn read_from(kind: SecretKind, env: &str, value: Option<std::ffi::OsString>) -> Result<Secret> {
    let path = value.filter(|v| !v.is_empty()).ok_or_else(|| {
        HarnessError::Usage(format!("the {kind} is required by this profile: set {env} to the path of the file holding it"))
    })?;
    // The error names the variable and the path, never the content.
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the {kind} from {env}={}", std::path::Path::new(&path).display()))?;
    Ok(Secret::new(text))
}

/// The manifest that installs a credential (itself a [`Secret`]): the licence as given, or the pull secret.
pub fn manifest(kind: SecretKind, content: &Secret) -> Result<Secret> {
    match kind {
        SecretKind::License => Ok(content.clone()),
        SecretKind::PullSecret => {
            // stringData is accepted for every Secret type; JSON-encoding makes it a valid YAML scalar.
            let encoded = serde_json::to_string(content.expose().trim())?;
            Ok(Secret::new(format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tigera-pull-secret\n  namespace: tigera-operator\n\
                 type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: {encoded}\n"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "{\"auths\":{\"quay.io\":{\"auth\":\"c3VwZXJzZWNyZXQ=\"}}}";

    #[test]
    fn a_secret_never_shows_its_value_in_debug_or_display() {
        let s = Secret::new(VALUE);
        assert!(!format!("{s:?}").contains("c3VwZXJzZWNyZXQ"));
        assert!(!format!("{s}").contains("c3VwZXJzZWNyZXQ"));
        let m = manifest(SecretKind::PullSecret, &s).unwrap();
        assert!(!format!("{m:?} {m}").contains("c3VwZXJzZWNyZXQ"));
        assert!(m.expose().contains("c3VwZXJzZWNyZXQ"), "the manifest carries it to the API server");
    }

    #[test]
    fn the_pull_secret_manifest_is_valid_yaml_with_the_docker_config() {
        let m = manifest(SecretKind::PullSecret, &Secret::new(VALUE)).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(m.expose()).unwrap();
        assert_eq!(v["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(v["metadata"]["namespace"], "tigera-operator");
        assert_eq!(v["stringData"][".dockerconfigjson"], VALUE);
    }

    #[test]
    fn an_unset_variable_is_a_usage_error_naming_it() {
        let err = read_from(SecretKind::License, "TIGERA_LICENSE_FILE", None).unwrap_err();
        assert!(err.to_string().contains("set TIGERA_LICENSE_FILE"), "{err}");
        assert_eq!(HarnessError::classify(err).exit_code(), 2);
    }

    #[test]
    fn an_unreadable_file_names_the_variable_and_path_but_not_content() {
        let err = read_from(SecretKind::License, "TIGERA_LICENSE_FILE", Some("/nonexistent/license.yaml".into())).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("TIGERA_LICENSE_FILE=/nonexistent/license.yaml"), "{text}");
    }

    #[test]
    fn a_readable_file_is_wrapped_without_exposing_it() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), VALUE).unwrap();
        let s = read_from(SecretKind::PullSecret, "TIGERA_PULL_SECRET_FILE", Some(tmp.path().into())).unwrap();
        assert_eq!(s.expose(), VALUE);
        assert_eq!(format!("{s}"), format!("<redacted, {} bytes>", VALUE.len()));
    }
}
