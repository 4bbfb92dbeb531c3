//! The accounts that may sign in to the admin console in the browser
//! (`livesync.console_users`): added, removed and listed by `livesync-admin console-user`,
//! checked by the worker that serves the console.
//!
//! Passwords are stored as Argon2id hashes (PHC strings, the `argon2` crate's defaults:
//! 19 MiB, 2 passes, a random 16-byte salt). A sign-in is checked with
//! [`verify_password`]; an unknown name is checked against [`dummy_hash`], so that both
//! take the same time.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use sqlx::PgPool;

/// The longest console user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// One account, as `console-user list` shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ConsoleUser {
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_sign_in_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Sessions not signed out (some may have expired since).
    pub sessions: i64,
}

/// Why an account could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("a console user name must not be blank nor start or end with blanks")]
    BlankName,
    #[error(
        "a console user name has at most {MAX_NAME_CHARS} characters and no control characters"
    )]
    BadName,
    #[error("console user \"{0}\" exists already")]
    Taken(String),
    #[error("hashing the password failed: {0}")]
    Hashing(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The Argon2id hash of `password`, as a PHC string.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    // 16 bytes always encode.
    let salt = SaltString::encode_b64(&salt_bytes).expect("a 16-byte salt encodes");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with its default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches `hash` (a PHC string). A malformed hash matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a password nobody knows, made once: checked for a name that has no account,
/// so that the answer takes as long as for a wrong password.
pub fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let unguessable: [u8; 32] = rand::random();
        hash_password(&String::from_utf8_lossy(&unguessable))
    })
}

/// A name's problem, if it has one: blank, too long, control characters.
pub fn check_name(name: &str) -> Result<(), AddError> {
    if name.trim().is_empty() || name.trim() != name {
        return Err(AddError::BlankName);
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AddError::BadName);
    }
    Ok(())
}

/// Add an account with `password`. A name already taken is refused.
pub async fn add(pool: &PgPool, name: &str, password: &str) -> Result<(), AddError> {
    check_name(name)?;
    let hash = tokio::task::spawn_blocking({
        let password = password.to_string();
        move || hash_password(&password)
    })
    .await
    .map_err(|e| AddError::Hashing(e.to_string()))?;
    let added = sqlx::query(
        "insert into livesync.console_users (name, password_hash) values ($1, $2) \
         on conflict (name) do nothing",
    )
    .bind(name)
    .bind(hash)
    .execute(pool)
    .await?
    .rows_affected();
    if added == 0 {
        return Err(AddError::Taken(name.to_string()));
    }
    Ok(())
}

/// Remove an account (and so its sessions). `false` when there was none.
pub async fn remove(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("delete from livesync.console_users where name = $1")
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Every account, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<ConsoleUser>, sqlx::Error> {
    sqlx::query_as(
        "select c.name, c.created_at, c.last_sign_in_at, \
                (select count(*) from livesync.console_sessions s \
                  where s.console_user_id = c.id) as sessions \
           from livesync.console_users c order by c.name",
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("richtig-und-lang");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "richtig-und-lang"));
        assert!(!verify_password(&hash, "falsch-und-lang"));
        assert!(!verify_password("not a hash", "richtig-und-lang"));
        assert_ne!(hash, hash_password("richtig-und-lang"), "salted");
        assert!(!verify_password(dummy_hash(), ""));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("admin").is_ok());
        assert!(check_name(" admin").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\u{7}").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
