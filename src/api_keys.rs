//! API keys: opaque bearer credentials, for clients (the OpenAI and Anthropic SDKs among them)
//! that send a static key rather than a JWT.
//!
//! Guards against keys that leak from the gateway itself: the file holds only SHA-256 digests,
//! never a key, so a copy of it lets nobody in; a presented key is looked up by its digest, so the
//! lookup's timing depends on the digest, never on how much of a key an attacker has guessed;
//! keys carry a recognisable prefix ([`KEY_PREFIX`]) so secret scanners find leaked ones. The file
//! is re-read when it changes (and on SIGHUP); a file that cannot be read or parsed is refused and
//! the keys in force kept.
//!
//! The file holds one key a line: `sha256:<64 lowercase hex> <user> [scope ...]`; blank lines and
//! lines starting with `#` are ignored. `portcullis api-key new` makes a key and its line.

use base64::Engine;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::file_stamp::{ListUpdate, WatchedFile};
use crate::principal::{Principal, X_PORTCULLIS_SCOPES, X_PORTCULLIS_USER};

/// The prefix of every key `portcullis api-key new` makes.
pub const KEY_PREFIX: &str = "pcl_";
/// Random bytes in a new key (256 bits), written as 43 base64url characters after the prefix.
pub const KEY_BYTES: usize = 32;

/// The keys in a file, by digest.
#[derive(Debug, Default, Clone)]
pub struct ApiKeyList {
    by_digest: HashMap<[u8; 32], Arc<Principal>>,
}

impl ApiKeyList {
    /// Parses the file format; the error names the first bad line (never its content).
    pub fn parse(text: &str) -> Result<ApiKeyList, String> {
        let mut list = ApiKeyList::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}", number + 1);
            let mut fields = line.split_whitespace();
            let digest = fields
                .next()
                .and_then(|d| d.strip_prefix("sha256:"))
                .and_then(parse_hex_digest)
                .ok_or_else(|| bad("expected `sha256:<64 lowercase hex> <user> [scope ...]`"))?;
            let user = fields.next().ok_or_else(|| bad("a key without a user"))?;
            let scopes: Vec<String> = fields.map(str::to_owned).collect();
            let principal = principal(user, scopes).ok_or_else(|| {
                bad("the user or a scope cannot be sent as a header (use visible ASCII)")
            })?;
            if list.by_digest.insert(digest, Arc::new(principal)).is_some() {
                return Err(bad("the same key is listed twice"));
            }
        }
        Ok(list)
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<ApiKeyList, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Keys in the list.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn lookup(&self, key: &str) -> Option<Arc<Principal>> {
        self.by_digest.get(&digest(key)).cloned()
    }
}

/// The principal an API key stands for: the user, the scopes, and the identity headers.
fn principal(user: &str, scopes: Vec<String>) -> Option<Principal> {
    let mut identity_headers = vec![(X_PORTCULLIS_USER.clone(), HeaderValue::from_str(user).ok()?)];
    if !scopes.is_empty() {
        identity_headers.push((
            X_PORTCULLIS_SCOPES.clone(),
            HeaderValue::from_str(&scopes.join(" ")).ok()?,
        ));
    }
    Some(Principal {
        user: Arc::from(user),
        scopes,
        identity_headers,
        claims: Vec::new(),
        subject: None,
        token_id: None,
        audiences: None,
    })
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 digest of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key and its line for the keys file.
pub fn new_key(user: &str, scopes: &[String]) -> Result<(String, String), String> {
    let mut random = [0u8; KEY_BYTES];
    getrandom::fill(&mut random).map_err(|_| "the system's random source failed".to_owned())?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    if principal(user, scopes.to_vec()).is_none() || user.is_empty() {
        return Err("the user and scopes must be visible ASCII without spaces".to_owned());
    }
    let hex: String = digest(&key).iter().map(|b| format!("{b:02x}")).collect();
    let mut line = format!("sha256:{hex} {user}");
    for scope in scopes {
        line.push(' ');
        line.push_str(scope);
    }
    Ok((key, line))
}

/// The keys in force, following their file.
#[derive(Debug)]
pub struct ApiKeys(WatchedFile<ApiKeyList>);

impl ApiKeys {
    /// Loads the keys from `path`.
    pub fn load(path: &Path) -> Result<ApiKeys, String> {
        WatchedFile::load(path, ApiKeyList::read, ApiKeyList::len).map(ApiKeys)
    }

    /// The principal of `key`, if it is a key in force.
    pub fn lookup(&self, key: &str) -> Option<Arc<Principal>> {
        self.0.current().lookup(key)
    }

    /// Re-reads the file if it changed since it was last read.
    pub fn check(&self) -> ListUpdate {
        self.0.check()
    }
}

#[cfg(test)]
mod tests {
    use super::{ApiKeyList, KEY_PREFIX, new_key};

    #[test]
    fn a_new_key_is_found_by_its_line_and_nothing_else_is() {
        let (key, line) = new_key("alice", &["chat".to_owned()]).unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43);
        assert!(!line.contains(&key));
        let list = ApiKeyList::parse(&format!("# team keys\n\n{line}\n")).unwrap();
        let found = list.lookup(&key).unwrap();
        assert_eq!(&*found.user, "alice");
        assert_eq!(found.scopes, ["chat"]);
        assert!(list.lookup(&key[..key.len() - 1]).is_none());
        assert!(list.lookup("").is_none());
        let (other, _) = new_key("bob", &[]).unwrap();
        assert_ne!(key, other);
    }

    #[test]
    fn bad_lines_are_refused_without_their_content() {
        for text in [
            "sha256:00 alice",
            "md5:0123 alice",
            &format!("sha256:{} ", "a".repeat(64)),
            &format!(
                "sha256:{} alice\nsha256:{} bob",
                "b".repeat(64),
                "b".repeat(64)
            ),
            &format!("sha256:{} alice", "A".repeat(64)),
        ] {
            let error = ApiKeyList::parse(text).unwrap_err();
            assert!(error.starts_with("line "), "{error}");
            assert!(
                !error.contains("aaaa") && !error.contains("bbbb"),
                "{error}"
            );
        }
    }
}
