//! Sealing secrets at rest with AES-256-GCM under the master key.
//!
//! The master key comes from `DEFT_MASTER_KEY` (64 hex digits) or from `DATA_DIR/master-key`,
//! a 0600 file created on first start. Several machines sharing one PostgreSQL database must
//! share the key, so they set `DEFT_MASTER_KEY`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore as _;

use crate::StoreError;

/// The file holding the master key in the data dir.
pub const MASTER_KEY_FILE: &str = "master-key";

/// 256 bits that never print.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "`DEFT_MASTER_KEY` must be 64 hexadecimal digits (32 bytes); generate one with `openssl rand -hex 32`"
    )]
    BadEnv,
    #[error(
        "the master key file {path} must hold 64 hexadecimal digits; restore it from a backup, or set `DEFT_MASTER_KEY`"
    )]
    BadFile { path: PathBuf },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl MasterKey {
    pub fn from_hex(text: &str) -> Option<MasterKey> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(MasterKey(bytes.try_into().ok()?))
    }

    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        MasterKey(key)
    }

    /// `DEFT_MASTER_KEY` when given, else the data dir's key file, created (0600) when missing.
    pub fn load(env_value: Option<&str>, data_dir: &Path) -> Result<MasterKey, MasterKeyError> {
        if let Some(value) = env_value {
            return MasterKey::from_hex(value).ok_or(MasterKeyError::BadEnv);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match fs_err::read_to_string(&path) {
            Ok(text) => MasterKey::from_hex(&text).ok_or(MasterKeyError::BadFile { path }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::generate();
                write_private_file(&path, hex::encode(key.0).as_bytes())?;
                Ok(key)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Names the key without revealing it: stored in the database to catch a wrong key.
    pub(crate) fn fingerprint(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"deft master key fingerprint v1\0");
        hasher.update(self.0);
        hex::encode(hasher.finalize())
    }

    pub(crate) fn seal(&self, context: &str, plaintext: &[u8]) -> (String, String) {
        let cipher = Aes256Gcm::new((&self.0).into());
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        (BASE64.encode(nonce), BASE64.encode(sealed))
    }

    pub(crate) fn open(
        &self,
        context: &str,
        nonce: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let nonce = BASE64.decode(nonce).map_err(|_| corrupt())?;
        let sealed = BASE64.decode(sealed).map_err(|_| corrupt())?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| corrupt())?;
        let cipher = Aes256Gcm::new((&self.0).into());
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::SecretKeyMismatch)
    }
}

fn corrupt() -> StoreError {
    StoreError::Corrupt {
        what: "a sealed secret is not valid base64".into(),
    }
}

/// Creates `path` readable by its owner only, failing if it already exists, so that a key or
/// token is never briefly readable by others and never silently replaced.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = MasterKey::generate();
        let (nonce, sealed) = key.seal("user-1/TOKEN", b"hunter2");
        assert_eq!(
            key.open("user-1/TOKEN", &nonce, &sealed).unwrap(),
            b"hunter2"
        );
        assert!(matches!(
            key.open("user-2/TOKEN", &nonce, &sealed),
            Err(StoreError::SecretKeyMismatch)
        ));
        assert!(matches!(
            MasterKey::generate().open("user-1/TOKEN", &nonce, &sealed),
            Err(StoreError::SecretKeyMismatch)
        ));
        assert!(!sealed.contains("hunter2"));
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load(None, dir.path()).unwrap();
        let mode = fs_err::metadata(dir.path().join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = MasterKey::load(None, dir.path()).unwrap();
        assert_eq!(first.0, second.0);
        assert!(matches!(
            MasterKey::load(Some("nothex"), dir.path()),
            Err(MasterKeyError::BadEnv)
        ));
        let from_env = MasterKey::load(Some(&"ab".repeat(32)), dir.path()).unwrap();
        assert_eq!(from_env.0, [0xab; 32]);
    }
}
