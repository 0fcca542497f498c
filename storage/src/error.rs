//! The storage engine's errors: one variant per cause a caller can act on.

use core::fmt;
use std::io;

/// Everything that can go wrong in the storage engine.
#[derive(Debug)]
pub enum StorageError {
    /// The key is longer than the configured maximum.
    KeyTooLarge {
        size_bytes: usize,
        size_bytes_max: usize,
    },
    /// The value is longer than the configured maximum.
    ValueTooLarge {
        size_bytes: usize,
        size_bytes_max: usize,
    },
    /// The disk (or quota) is full. Nothing was acknowledged; what is stored stays
    /// readable, and writes succeed again once space returns.
    DiskFull,
    /// The index reached its configured key capacity.
    IndexFull { keys_max: u64 },
    /// Bytes on disk failed verification (checksum, magic, lengths). Never returned as
    /// data; counted and logged.
    Corrupt {
        segment_id: u32,
        offset: u32,
        reason: &'static str,
    },
    /// Another process holds this data directory.
    Locked,
    /// The configuration cannot work (a reason in words).
    Config(String),
    /// The split API was used out of order (for example aborting a batch that is not
    /// the newest one prepared).
    Misuse(&'static str),
    /// Any other I/O failure, with what the engine was doing.
    Io {
        kind: io::ErrorKind,
        doing: &'static str,
        detail: String,
    },
}

/// The engine's result type.
pub type Result<T> = core::result::Result<T, StorageError>;

impl StorageError {
    /// Wraps an OS error; disk-full conditions become [`StorageError::DiskFull`].
    pub fn io(doing: &'static str, error: io::Error) -> StorageError {
        if is_disk_full(&error) {
            return StorageError::DiskFull;
        }
        StorageError::Io {
            kind: error.kind(),
            doing,
            detail: error.to_string(),
        }
    }

    /// A short stable name for counters and RESP error prefixes.
    pub fn kind_name(&self) -> &'static str {
        match self {
            StorageError::KeyTooLarge { .. } => "key_too_large",
            StorageError::ValueTooLarge { .. } => "value_too_large",
            StorageError::DiskFull => "disk_full",
            StorageError::IndexFull { .. } => "index_full",
            StorageError::Corrupt { .. } => "corrupt",
            StorageError::Locked => "locked",
            StorageError::Config(_) => "config",
            StorageError::Misuse(_) => "misuse",
            StorageError::Io { .. } => "io",
        }
    }
}

fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    ) || error.kind() == io::ErrorKind::StorageFull
        || error.kind() == io::ErrorKind::QuotaExceeded
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::KeyTooLarge {
                size_bytes,
                size_bytes_max,
            } => {
                write!(
                    f,
                    "key of {size_bytes} bytes exceeds the limit of {size_bytes_max}"
                )
            }
            StorageError::ValueTooLarge {
                size_bytes,
                size_bytes_max,
            } => {
                write!(
                    f,
                    "value of {size_bytes} bytes exceeds the limit of {size_bytes_max}"
                )
            }
            StorageError::DiskFull => f.write_str("disk full: write refused, stored data intact"),
            StorageError::IndexFull { keys_max } => {
                write!(f, "index full: {keys_max} keys is the configured maximum")
            }
            StorageError::Corrupt {
                segment_id,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "corrupt record in segment {segment_id} at offset {offset}: {reason}"
                )
            }
            StorageError::Locked => f.write_str("data directory is in use by another process"),
            StorageError::Config(reason) => write!(f, "invalid storage configuration: {reason}"),
            StorageError::Misuse(reason) => write!(f, "storage API misuse: {reason}"),
            StorageError::Io {
                kind,
                doing,
                detail,
            } => {
                write!(f, "I/O error while {doing} ({kind:?}): {detail}")
            }
        }
    }
}

impl std::error::Error for StorageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_quota_become_disk_full_and_other_errors_keep_their_kind() {
        let full = StorageError::io("appending", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, StorageError::DiskFull));
        let quota = StorageError::io("appending", io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(matches!(quota, StorageError::DiskFull));
        let denied = StorageError::io("opening", io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(
            denied,
            StorageError::Io {
                kind: io::ErrorKind::PermissionDenied,
                doing: "opening",
                ..
            }
        ));
        assert_eq!(denied.kind_name(), "io");
    }
}
