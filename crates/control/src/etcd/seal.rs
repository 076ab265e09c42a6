//! Sealing secrets kept in etcd (the CA root's key): XChaCha20-Poly1305 with a 256-bit key
//! the operator gives every replica (`--store-key-file PATH`, or `WEFT_STORE_KEY`), 64 hex
//! digits. A sealed value is a version byte, a random 24-byte nonce and the ciphertext with its
//! tag; a wrong key or a changed byte fails to open, it never yields garbage.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;

const VERSION: u8 = 1;
const NONCE: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{source_name}: the store key must be 64 hex digits (32 bytes); make one with `head -c 32 /dev/urandom | xxd -p -c 64`")]
    BadKey { source_name: String },
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the store key file must not be readable by others (chmod 600)")]
    Open { path: String },
    #[error("cannot unseal: wrong store key, or the value was changed")]
    Unseal,
    #[error("etcd keeps the CA root sealed: give the store key with --store-key-file PATH or WEFT_STORE_KEY (64 hex digits, the same on every replica)")]
    Missing,
}

/// The key sealing what the control plane keeps in its store.
#[derive(Clone)]
pub struct SealKey(chacha20poly1305::Key);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str, source_name: &str) -> Result<SealKey, SealError> {
        let bad = || SealError::BadKey {
            source_name: source_name.to_string(),
        };
        let t = text.trim();
        if t.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(t.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(SealKey(bytes.into()))
    }

    /// The key in `path`, which only its owner may read.
    pub fn from_file(path: &Path) -> Result<SealKey, SealError> {
        use std::os::unix::fs::PermissionsExt;
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| SealError::Read {
            path: name.clone(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SealError::Open { path: name });
        }
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Read {
            path: name.clone(),
            source,
        })?;
        SealKey::from_hex(&text, &name)
    }

    /// `--store-key-file`, else `WEFT_STORE_KEY`, else an error saying so.
    pub fn from_file_or_env(path: Option<&Path>) -> Result<SealKey, SealError> {
        match path {
            Some(p) => SealKey::from_file(p),
            None => match std::env::var("WEFT_STORE_KEY") {
                Ok(v) => SealKey::from_hex(&v, "WEFT_STORE_KEY"),
                Err(_) => Err(SealError::Missing),
            },
        }
    }

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let cipher = XChaCha20Poly1305::new(&self.0);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), plain)
            .expect("XChaCha20-Poly1305 seals any length etcd can hold");
        let mut out = Vec::with_capacity(1 + NONCE + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE || sealed[0] != VERSION {
            return Err(SealError::Unseal);
        }
        let cipher = XChaCha20Poly1305::new(&self.0);
        cipher
            .decrypt(
                XNonce::from_slice(&sealed[1..1 + NONCE]),
                &sealed[1 + NONCE..],
            )
            .map_err(|_| SealError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_values_open_only_with_their_key_and_hide_the_text() {
        let key = SealKey::from_hex(KEY, "test").unwrap();
        let secret = b"-----BEGIN PRIVATE KEY-----\nsecret";
        let sealed = key.seal(secret);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&sealed).unwrap(), secret);
        let other = SealKey::from_hex(&KEY.replace("00", "ff"), "test").unwrap();
        assert!(matches!(other.open(&sealed), Err(SealError::Unseal)));
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(matches!(key.open(&changed), Err(SealError::Unseal)));
    }

    #[test]
    fn bad_keys_say_what_a_key_is() {
        for bad in ["", "abc", &KEY.replace('0', "g")] {
            let e = SealKey::from_hex(bad, "WEFT_STORE_KEY")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("WEFT_STORE_KEY") && e.contains("64 hex digits"),
                "{e}"
            );
        }
    }
}
