//! Who this node is, kept in its data directory so a restart keeps it.
//!
//! The file `identity` holds two lines, `node_id = <n>` and `cluster_id = <n>`. It is
//! written once, when a node starts on an empty directory (temporary file, fsync,
//! rename, fsync of the directory), and never changed. Dots are minted under the node
//! id, so a directory must never be served under another id (the core's docs say
//! why): a `--node-id` or `--cluster-id` that disagrees with the stored one stops the
//! node with an error naming both. A new directory without `--node-id` draws a random
//! id from the OS generator, below the bits the core reserves for writer ids.
//!
//! The identity and the stores stand or fall together. A new node creates its store
//! directories (durably: each new directory's parent is fsynced) before it writes its
//! identity, so a directory with an identity always had its stores. A stored identity
//! whose store directories are gone, or stores that hold files under a directory whose
//! identity is gone, stop the node with an error saying what is missing and what to do:
//! serving empty stores under the old id would let peers believe it holds what it
//! lost, and minting a new id over old stores would put their dots under someone else.

use crate::executor::STORE_NAMES;
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
    /// An identity is stored but a store directory it was created with is gone.
    StoresMissing {
        dir: PathBuf,
        node_id: u64,
        store: &'static str,
    },
    /// Store files are there but the identity file is not.
    IdentityMissing {
        dir: PathBuf,
        store: &'static str,
    },
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
            IdentityError::StoresMissing {
                dir,
                node_id,
                store,
            } => write!(
                f,
                "{}: this directory is node {node_id}'s, but its {store} store is gone; refusing to serve empty stores as node {node_id} (restore the directory from a backup, or remove the identity file to start as a new, empty node that must join again)",
                dir.display()
            ),
            IdentityError::IdentityMissing { dir, store } => write!(
                f,
                "{}: the {store} store holds files but the identity file is gone; refusing to mint a new node id over another node's data (restore the identity file, or move the stores away)",
                dir.display()
            ),
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
    ringkv_storage::segment::create_directory_durably(data_dir).map_err(io(data_dir))?;
    let path = data_dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored = parse(&text).map_err(|reason| IdentityError::Malformed {
                path: path.clone(),
                reason,
            })?;
            if let Some(store) = STORE_NAMES
                .into_iter()
                .find(|store| !data_dir.join(store).is_dir())
            {
                return Err(IdentityError::StoresMissing {
                    dir: data_dir.to_path_buf(),
                    node_id: stored.node_id,
                    store,
                });
            }
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
            let holds_files = |store: &&'static str| {
                fs::read_dir(data_dir.join(store)).is_ok_and(|mut entries| entries.next().is_some())
            };
            if let Some(store) = STORE_NAMES.into_iter().find(holds_files) {
                return Err(IdentityError::IdentityMissing {
                    dir: data_dir.to_path_buf(),
                    store,
                });
            }
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
            // The stores' directories first: an identity on disk means they exist.
            for store in STORE_NAMES {
                let dir = data_dir.join(store);
                ringkv_storage::segment::create_directory_durably(&dir).map_err(io(&dir))?;
            }
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
    fn stores_gone_under_a_kept_identity_stop_the_node() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), Some(4), 9).unwrap();
        for store in STORE_NAMES {
            assert!(
                dir.path().join(store).is_dir(),
                "{store} made with the identity"
            );
        }
        std::fs::remove_dir_all(dir.path().join("data")).unwrap();
        let error = load_or_create(dir.path(), None, 9).unwrap_err();
        assert!(
            matches!(
                error,
                IdentityError::StoresMissing {
                    node_id: 4,
                    store: "data",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("data store is gone"), "{error}");
    }

    #[test]
    fn stores_that_lost_their_identity_stop_the_node_instead_of_getting_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), Some(4), 9).unwrap();
        std::fs::write(dir.path().join("data").join("00000001.log"), b"x").unwrap();
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let error = load_or_create(dir.path(), None, 9).unwrap_err();
        assert!(
            matches!(error, IdentityError::IdentityMissing { store: "data", .. }),
            "{error}"
        );
        // Empty store directories (a node stopped between making them and writing its
        // identity) are a new node's.
        let fresh = tempfile::tempdir().unwrap();
        std::fs::create_dir(fresh.path().join("meta")).unwrap();
        assert_eq!(load_or_create(fresh.path(), Some(7), 9).unwrap().node_id, 7);
    }

    #[test]
    fn a_damaged_file_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "node_id = x\n").unwrap();
        let error = load_or_create(dir.path(), Some(1), 1).unwrap_err();
        assert!(matches!(error, IdentityError::Malformed { .. }), "{error}");
    }
}
