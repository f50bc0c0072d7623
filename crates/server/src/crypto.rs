//! Encryption at rest (AES-256-GCM) and token hashing.
//!
//! Tokens are looked up by their SHA-256 and kept encrypted, so an admin can still be shown a
//! user's token (as dstack does) while the database alone reveals none. The key is generated
//! on first start into `<server_dir>/data/encryption.key` (mode 0600).

use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::ServerError;

/// The hex SHA-256 of a token: what the database indexes.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Encrypts and decrypts values stored at rest.
pub struct Cipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

const PREFIX: &str = "aes256gcm:";

impl Cipher {
    pub fn from_key(key: &[u8; 32]) -> Cipher {
        Cipher { cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)) }
    }

    /// Reads the base64 key at `path`, or creates one there.
    pub fn load_or_create(path: &Path) -> Result<Cipher, ServerError> {
        let io = |what: &str, source| ServerError::Io { what: format!("{what} {}", path.display()), source };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = B64
                    .decode(text.trim())
                    .map_err(|e| ServerError::Crypto(format!("{}: {e}", path.display())))?;
                let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                    ServerError::Crypto(format!(
                        "{}: AES key must be 32 bytes. Got {} bytes",
                        path.display(),
                        b.len()
                    ))
                })?;
                Ok(Cipher::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Aes256Gcm::generate_key(OsRng);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
                }
                write_private(path, &B64.encode(key)).map_err(|e| io("writing", e))?;
                let key: [u8; 32] = key.into();
                Ok(Cipher::from_key(&key))
            }
            Err(e) => Err(io("reading", e)),
        }
    }

    /// `aes256gcm:<base64(nonce || ciphertext)>`.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        let ciphertext = self.cipher.encrypt(&nonce, plaintext.as_bytes()).unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", B64.encode(blob))
    }

    /// The plaintext, or `None` for a value this key did not encrypt.
    pub fn decrypt(&self, stored: &str) -> Option<String> {
        let blob = B64.decode(stored.strip_prefix(PREFIX)?).ok()?;
        if blob.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plaintext = self.cipher.decrypt(&Nonce::from(nonce), ciphertext).ok()?;
        String::from_utf8(plaintext).ok()
    }
}

/// A user's SSH key pair as dstack makes it: RSA 2048, the public key in OpenSSH form ending
/// with ` <username>\n`, the private key as PKCS#8 PEM (OpenSSH reads it).
pub fn generate_ssh_keypair(username: &str) -> Result<(String, String), ServerError> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::traits::PublicKeyParts;

    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| ServerError::Crypto(format!("generating an RSA key: {e}")))?;
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| ServerError::Crypto(format!("encoding an RSA key: {e}")))?
        .to_string();
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-rsa");
    ssh_mpint(&mut blob, &key.e().to_bytes_be());
    ssh_mpint(&mut blob, &key.n().to_bytes_be());
    let public = format!("ssh-rsa {} {username}\n", B64.encode(blob));
    Ok((public, private))
}

fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An SSH `mpint`: big-endian, a leading zero byte when the high bit is set.
fn ssh_mpint(out: &mut Vec<u8>, bytes: &[u8]) {
    let trimmed: &[u8] = {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        &bytes[start..]
    };
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        let mut padded = Vec::with_capacity(trimmed.len() + 1);
        padded.push(0);
        padded.extend_from_slice(trimmed);
        ssh_string(out, &padded);
    } else {
        ssh_string(out, trimmed);
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}

/// Whether `private` is a private key dstack accepts for SSH hosts: RSA, ECDSA or Ed25519,
/// OpenSSH or PEM, not protected by a passphrase. Only the structure is checked.
pub fn is_usable_private_key(private: &str) -> bool {
    let text = private.trim();
    if let Some(body) = text
        .strip_prefix("-----BEGIN OPENSSH PRIVATE KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END OPENSSH PRIVATE KEY-----"))
    {
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(blob) = B64.decode(b64) else { return false };
        return openssh_key_is_usable(&blob).unwrap_or(false);
    }
    let pem = ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"];
    pem.iter().any(|label| {
        text.starts_with(&format!("-----BEGIN {label}-----"))
            && text.ends_with(&format!("-----END {label}-----"))
            && !text.contains("ENCRYPTED")
    })
}

/// `openssh-key-v1`: no cipher, and a key type dstack supports.
fn openssh_key_is_usable(blob: &[u8]) -> Option<bool> {
    fn string<'a>(blob: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        let out = blob.get(4..4 + len)?;
        *blob = &blob[4 + len..];
        Some(out)
    }
    let mut rest = blob.strip_prefix(b"openssh-key-v1\0")?;
    let cipher = string(&mut rest)?;
    let _kdf = string(&mut rest)?;
    let _kdf_options = string(&mut rest)?;
    rest = rest.get(4..)?;
    let mut public = string(&mut rest)?;
    let kind = string(&mut public)?;
    let supported = kind == b"ssh-rsa" || kind == b"ssh-ed25519" || kind.starts_with(b"ecdsa-sha2-");
    Some(cipher == b"none" && supported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_and_decrypts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = Cipher::load_or_create(&path).unwrap();
        let stored = a.encrypt("secret token");
        assert!(!stored.contains("secret"));
        let b = Cipher::load_or_create(&path).unwrap();
        assert_eq!(b.decrypt(&stored).as_deref(), Some("secret token"));
        assert_ne!(a.encrypt("x"), a.encrypt("x"), "fresh nonce each time");
        let other = Cipher::from_key(&[7; 32]);
        assert_eq!(other.decrypt(&stored), None);
        assert_eq!(token_hash("abc").len(), 64);
    }

    #[test]
    fn ssh_keys_look_like_dstacks() {
        let (public, private) = generate_ssh_keypair("alice").unwrap();
        assert!(public.starts_with("ssh-rsa AAAAB3NzaC1yc2E"), "{public}");
        assert!(public.ends_with(" alice\n"));
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(private.ends_with("-----END PRIVATE KEY-----\n"));
        // OpenSSH itself derives the same public key from the private one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        write_private(&path, &private).unwrap();
        let out = std::process::Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path).output();
        if let Ok(out) = out {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let derived = String::from_utf8(out.stdout).unwrap();
            let ours: Vec<&str> = public.split(' ').take(2).collect();
            let theirs: Vec<&str> = derived.trim().split(' ').take(2).collect();
            assert_eq!(ours, theirs);
        }
    }
}
