//! The ed25519 device key that signs entries.
//!
//! `audit/device.key` holds the 32-byte secret seed as 64 hex digits and a newline, created
//! with mode 0600 (owner read/write only); `audit/device.pub` holds the public key the
//! same way, for verifiers. When `device.key` exists every appended entry is signed.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::{AuditError, Result, audit_dir, hex, unhex};

/// The device's secret key file in the audit folder (owner-only).
pub const KEY_FILE: &str = "device.key";
/// Its public key, for verifiers.
pub const PUBLIC_KEY_FILE: &str = "device.pub";

/// A signing key loaded from the home.
pub struct DeviceKey {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({})", self.public_hex())
    }
}

impl DeviceKey {
    /// Makes a new key from the OS random source and writes both files. Refuses to replace
    /// an existing key (entries signed with it would no longer verify).
    pub fn generate(home: &Path) -> Result<DeviceKey> {
        let dir = audit_dir(home);
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let path = dir.join(KEY_FILE);
        if path.exists() {
            return Err(AuditError::KeyExists { path });
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| AuditError::io(&path, std::io::Error::other(e.to_string())))?;
        let key = DeviceKey {
            key: SigningKey::from_bytes(&seed),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&path).map_err(|e| AuditError::io(&path, e))?;
        f.write_all(format!("{}\n", hex(&seed)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| AuditError::io(&path, e))?;
        let pub_path = dir.join(PUBLIC_KEY_FILE);
        std::fs::write(&pub_path, format!("{}\n", key.public_hex()))
            .map_err(|e| AuditError::io(&pub_path, e))?;
        Ok(key)
    }

    /// The home's key, or `None` when there is none.
    pub fn load(home: &Path) -> Result<Option<DeviceKey>> {
        let path = key_path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io(&path, e)),
        };
        let seed: [u8; 32] = unhex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| AuditError::Corrupt {
                path: path.clone(),
                message: "not a 32-byte hex ed25519 seed".into(),
            })?;
        Ok(Some(DeviceKey {
            key: SigningKey::from_bytes(&seed),
        }))
    }

    /// The public key as 64 hex digits.
    pub fn public_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// The hex ed25519 signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> String {
        hex(&self.key.sign(bytes).to_bytes())
    }
}

/// Where the device key of `home` lives.
pub fn key_path(home: &Path) -> PathBuf {
    audit_dir(home).join(KEY_FILE)
}

/// The public key a verifier trusts: `audit/device.pub`, else the one derived from
/// `audit/device.key`; `None` when the home has neither.
pub fn trusted_public_key(home: &Path) -> Result<Option<String>> {
    let path = audit_dir(home).join(PUBLIC_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let t = t.trim().to_string();
            if parse_public(&t).is_none() {
                return Err(AuditError::Corrupt {
                    path,
                    message: "not a 32-byte hex ed25519 public key".into(),
                });
            }
            Ok(Some(t))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(DeviceKey::load(home)?.map(|k| k.public_hex()))
        }
        Err(e) => Err(AuditError::io(&path, e)),
    }
}

fn parse_public(hex_key: &str) -> Option<VerifyingKey> {
    let b: [u8; 32] = unhex(hex_key)?.try_into().ok()?;
    VerifyingKey::from_bytes(&b).ok()
}

/// Whether `sig_hex` is a valid signature of `bytes` by `key_hex`.
pub(crate) fn check_signature(key_hex: &str, sig_hex: &str, bytes: &[u8]) -> bool {
    let Some(key) = parse_public(key_hex) else {
        return false;
    };
    let Some(sig) = unhex(sig_hex).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    key.verify(bytes, &Signature::from_bytes(&sig)).is_ok()
}
