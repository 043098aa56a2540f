//! Secrets: read from an environment variable or a file, never from the config file itself.
//!
//! Guards against leaks: a [`Secret`] prints as `<redacted>` in `Debug` and `Display`, compares in
//! constant time, and its bytes are only reachable through [`Secret::expose`].

use std::fmt;
use std::path::Path;

/// A secret value (an HMAC key, an upstream credential).
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Reads the secret from the environment variable `name`; a trailing newline is dropped.
    pub fn from_env(name: &str) -> Result<Secret, String> {
        match std::env::var_os(name) {
            None => Err(format!("environment variable {name} is not set")),
            Some(value) => Self::from_bytes(value.into_encoded_bytes())
                .ok_or_else(|| format!("environment variable {name} is empty")),
        }
    }

    /// Reads the secret from a file (a Kubernetes Secret mount); a trailing newline is dropped.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
        Self::from_bytes(bytes).ok_or_else(|| format!("{} is empty", path.display()))
    }

    /// Wraps secret bytes. Secrets are text: one trailing line ending (`\n` or `\r\n`, as an
    /// editor or `echo` leaves) is removed, nothing else.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Option<Secret> {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        (!bytes.is_empty()).then(|| Secret(bytes.into_boxed_slice()))
    }

    /// Reads from `*_env` or `*_file`: exactly one of them must be given.
    pub fn from_env_or_file(env: Option<&str>, file: Option<&str>) -> Result<Secret, String> {
        match (env, file) {
            (Some(name), None) => Self::from_env(name),
            (None, Some(path)) => Self::from_file(Path::new(path)),
            (Some(_), Some(_)) => Err("give either the _env or the _file key, not both".to_owned()),
            (None, None) => Err("needs an _env or a _file key".to_owned()),
        }
    }

    /// The secret's bytes: for use, never for printing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an empty secret cannot be built.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Secret {
    /// Constant-time comparison.
    fn eq(&self, other: &Secret) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::from_bytes(b"hunter2\n".to_vec()).unwrap();
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), b"hunter2");
        assert_eq!(s, Secret::from_bytes(b"hunter2".to_vec()).unwrap());
        assert_ne!(s, Secret::from_bytes(b"hunter3".to_vec()).unwrap());
        assert!(Secret::from_bytes(b"\n".to_vec()).is_none());
        assert_eq!(
            Secret::from_bytes(b"a\r\n".to_vec()).unwrap().expose(),
            b"a"
        );
        assert_eq!(
            Secret::from_bytes(b"a\n\n".to_vec()).unwrap().expose(),
            b"a\n"
        );
    }
}
