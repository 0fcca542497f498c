//! Who this node is, kept in its data directory so a restart keeps it.
//!
//! The file `identity` holds two lines, `node_id = <n>` and `cluster_id = <n>`. It is
//! written once, when a node starts on an empty directory (temporary file, fsync,
//! rename, fsync of the directory), and never changed. Dots are minted under the node
//! id, so a directory must never be served under another id (the core's docs say
//! why): a `--node-id` or `--cluster-id` that disagrees with the stored one stops the
//! node with an error naming both. A new directory without `--node-id` draws a random
//! id from the OS generator, below the bits the core reserves for writer ids.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "identity";
/// Member ids must leave the top two bits clear (`ringkv_core::node` reserves them).
const ID_MASK: u64 = (1 << 62) - 1;

/// A node's stored identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: u64,
}

#[derive(Debug)]
pub enum IdentityError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Malformed {
        path: PathBuf,
        reason: &'static str,
    },
    Mismatch {
        what: &'static str,
        stored: u64,
        given: u64,
    },
    OutOfRange(u64),
    Random(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            IdentityError::Malformed { path, reason } => {
                write!(
                    f,
                    "{}: {reason}; refusing to guess who this node is",
                    path.display()
                )
            }
            IdentityError::Mismatch {
                what,
                stored,
                given,
            } => write!(
                f,
                "the data directory belongs to {what} {stored}, but {given} was given; use another directory or drop the flag"
            ),
            IdentityError::OutOfRange(id) => {
                write!(f, "node id {id} must lie in 1..2^62")
            }
            IdentityError::Random(error) => write!(f, "cannot draw a node id: {error}"),
        }
    }
}

impl std::error::Error for IdentityError {}

/// The identity stored in `data_dir`, or a new one (from `node_id` when given) written
/// there. Creates the directory when missing.
pub fn load_or_create(
    data_dir: &Path,
    node_id: Option<u64>,
    cluster_id: u64,
) -> Result<Identity, IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| IdentityError::Io { path, error }
    };
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let path = data_dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored = parse(&text).map_err(|reason| IdentityError::Malformed {
                path: path.clone(),
                reason,
            })?;
            if let Some(given) = node_id.filter(|&given| given != stored.node_id) {
                return Err(IdentityError::Mismatch {
                    what: "node",
                    stored: stored.node_id,
                    given,
                });
            }
            if stored.cluster_id != cluster_id {
                return Err(IdentityError::Mismatch {
                    what: "cluster",
                    stored: stored.cluster_id,
                    given: cluster_id,
                });
            }
            Ok(stored)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let node_id = match node_id {
                Some(id) => id,
                None => random_id()?,
            };
            if node_id == 0 || node_id > ID_MASK {
                return Err(IdentityError::OutOfRange(node_id));
            }
            let identity = Identity {
                node_id,
                cluster_id,
            };
            store(data_dir, identity).map_err(io(&path))?;
            Ok(identity)
        }
        Err(error) => Err(IdentityError::Io { path, error }),
    }
}

fn random_id() -> Result<u64, IdentityError> {
    loop {
        let id = getrandom::u64().map_err(|e| IdentityError::Random(e.to_string()))? & ID_MASK;
        if id != 0 {
            return Ok(id);
        }
    }
}

fn parse(text: &str) -> Result<Identity, &'static str> {
    let mut node_id = None;
    let mut cluster_id = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once('=').ok_or("a line is not name = value")?;
        let value: u64 = value
            .trim()
            .parse()
            .map_err(|_| "a value is not a number")?;
        match name.trim() {
            "node_id" => node_id = Some(value),
            "cluster_id" => cluster_id = Some(value),
            _ => return Err("unknown field"),
        }
    }
    Ok(Identity {
        node_id: node_id.ok_or("node_id missing")?,
        cluster_id: cluster_id.ok_or("cluster_id missing")?,
    })
}

fn store(data_dir: &Path, identity: Identity) -> std::io::Result<()> {
    let temporary = data_dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut file = File::create(&temporary)?;
        write!(
            file,
            "node_id = {}\ncluster_id = {}\n",
            identity.node_id, identity.cluster_id
        )?;
        file.sync_all()?;
    }
    fs::rename(&temporary, data_dir.join(FILE_NAME))?;
    File::open(data_dir)?.sync_all()
}

/// A random seed for the core (stand-in writer ids are drawn from it and must never
/// repeat across starts).
pub fn random_seed() -> Result<u64, IdentityError> {
    getrandom::u64().map_err(|e| IdentityError::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), Some(4), 9).unwrap();
        assert_eq!(first.node_id, 4);
        let again = load_or_create(dir.path(), None, 9).unwrap();
        assert_eq!(again, first, "no flag: the stored id");
    }

    #[test]
    fn a_directory_refuses_another_id_or_cluster() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), Some(4), 9).unwrap();
        let error = load_or_create(dir.path(), Some(5), 9).unwrap_err();
        assert!(error.to_string().contains("node 4"), "{error}");
        assert!(load_or_create(dir.path(), Some(4), 10).is_err());
    }

    #[test]
    fn a_new_directory_draws_an_id_below_the_reserved_bits() {
        let dir = tempfile::tempdir().unwrap();
        let identity = load_or_create(dir.path(), None, 1).unwrap();
        assert!(identity.node_id != 0 && identity.node_id <= ID_MASK);
        assert!(load_or_create(tempfile::tempdir().unwrap().path(), Some(1 << 62), 1).is_err());
    }

    #[test]
    fn a_damaged_file_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "node_id = x\n").unwrap();
        let error = load_or_create(dir.path(), Some(1), 1).unwrap_err();
        assert!(matches!(error, IdentityError::Malformed { .. }), "{error}");
    }
}
