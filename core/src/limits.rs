//! Size limits that every part of ringkv agrees on (design.md section 3).
//!
//! Defined once here; storage, codecs and shells use these constants (or a configured
//! value at or below them), never their own copies.

/// Largest key, in bytes. Configuration may lower it, never raise it.
pub const KEY_SIZE_BYTES_MAX: usize = 1024;

/// Largest value a client may store, in bytes (1 MiB).
pub const VALUE_SIZE_BYTES_MAX: usize = 1 << 20;
