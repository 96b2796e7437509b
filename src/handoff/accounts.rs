//! Agent credentials: argon2 password hashes, and random bearer tokens stored only as sha256.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::assets::sha256_hex;
use crate::store::NewAgent;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("password must be at least {0} characters")]
    TooShort(usize),
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error("{0}")]
    Invalid(String),
}

pub const MIN_PASSWORD_CHARS: usize = 8;

/// An argon2id PHC string for a password.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CredentialError::TooShort(MIN_PASSWORD_CHARS));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Whether `password` matches a stored PHC string (a malformed hash never matches).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// `hash_password` on the blocking pool: argon2 costs tens of milliseconds of CPU by design, and
/// on the runtime's few worker threads a burst of logins would stall every socket.
pub async fn hash_password_off_runtime(password: String) -> Result<String, CredentialError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| CredentialError::Hash(e.to_string()))?
}

/// `verify_password` on the blocking pool (see `hash_password_off_runtime`).
pub async fn verify_password_off_runtime(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &stored))
        .await
        .unwrap_or(false)
}

/// A validated new agent (shared by the admin API and `baton agents add`); the password is
/// hashed off the runtime.
pub async fn new_agent(
    name: &str,
    display_name: Option<&str>,
    password: Option<&str>,
    skills: &[String],
    capacity: i64,
) -> Result<NewAgent, CredentialError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(CredentialError::Invalid(format!(
            "agent name {name:?} must be 1-64 letters, digits, '.', '_' or '-'"
        )));
    }
    if !(1..=100).contains(&capacity) {
        return Err(CredentialError::Invalid(
            "capacity must be between 1 and 100".into(),
        ));
    }
    let skills: Vec<String> = skills
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let skills = if skills.is_empty() {
        vec!["general".to_string()]
    } else {
        skills
    };
    let password_hash = match password {
        Some(password) => Some(hash_password_off_runtime(password.to_string()).await?),
        None => None,
    };
    Ok(NewAgent {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        display_name: display_name
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(name)
            .to_string(),
        password_hash,
        skills,
        capacity,
    })
}

/// A new random token (64 hex characters) and the hash to store.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// A readable random password for `baton agents add` when none is given.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(matches!(
            hash_password("short"),
            Err(CredentialError::TooShort(_))
        ));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(token_hash(&a), hash_a);
        assert_ne!(a, hash_a);
        assert_eq!(generate_password().len(), 16);
    }
}
