//! Session binding: an `Mcp-Session-Id` the upstream issued to one user is useless to another.
//!
//! Guards against session hijacking (MCP 2025-11-25 sessions): the id the client sees is the
//! upstream's id followed by `.` and an HMAC-SHA256 of the user and that id, under a key the
//! replicas share. The gateway checks the tag and strips it before forwarding, so an id presented
//! by another user, or one the gateway never issued, is refused without any shared state: the
//! binding holds across replicas and restarts (with a configured key).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Length of the tag's text: 32 bytes in unpadded base64url.
const TAG_CHARS: usize = 43;

/// Binds session ids to users with a keyed MAC.
pub struct SessionBinder {
    key: hmac::Key,
}

impl std::fmt::Debug for SessionBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionBinder(<redacted>)")
    }
}

impl SessionBinder {
    /// A binder keyed with `key` (at least 32 bytes; shared by the replicas).
    pub fn new(key: &[u8]) -> SessionBinder {
        SessionBinder {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A binder with a random key: sessions do not survive a restart or span replicas.
    pub fn random() -> Result<SessionBinder, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|_| "the system's random source failed".to_owned())?;
        Ok(SessionBinder::new(&key))
    }

    fn tag(&self, user: &str, id: &str) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(user.as_bytes());
        // A separator no user name or session id (visible ASCII) holds.
        context.update(&[0]);
        context.update(id.as_bytes());
        context.sign()
    }

    /// The id the client sees for the upstream's `id`, issued to `user`.
    pub fn bind(&self, user: &str, id: &str) -> String {
        let tag = self.tag(user, id);
        let mut bound = String::with_capacity(id.len() + 1 + TAG_CHARS);
        bound.push_str(id);
        bound.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut bound);
        bound
    }

    /// The upstream's id inside `presented`, when the gateway issued it to `user`.
    pub fn verify<'a>(&self, user: &str, presented: &'a str) -> Option<&'a str> {
        let (id, tag) = presented.rsplit_once('.')?;
        if tag.len() != TAG_CHARS {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut data = Vec::with_capacity(user.len() + 1 + id.len());
        data.extend_from_slice(user.as_bytes());
        data.push(0);
        data.extend_from_slice(id.as_bytes());
        // Constant-time comparison.
        hmac::verify(&self.key, &data, &tag).ok()?;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::SessionBinder;

    #[test]
    fn an_id_works_for_its_user_only_and_under_its_key_only() {
        let binder = SessionBinder::new(&[7; 32]);
        let bound = binder.bind("alice", "abc.123");
        assert!(bound.starts_with("abc.123."));
        assert!(bound.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(binder.verify("alice", &bound), Some("abc.123"));
        assert_eq!(binder.verify("bob", &bound), None);
        assert_eq!(binder.verify("alice", "abc.123"), None);
        assert_eq!(SessionBinder::new(&[8; 32]).verify("alice", &bound), None);
        let mut forged = bound.clone();
        forged.replace_range(..1, "x");
        assert_eq!(binder.verify("alice", &forged), None);
        // The same key on another replica (or after a restart) accepts it.
        assert_eq!(
            SessionBinder::new(&[7; 32]).verify("alice", &bound),
            Some("abc.123")
        );
    }
}
