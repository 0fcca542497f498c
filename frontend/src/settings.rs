//! A node's settings: command-line flags (clap) over an optional TOML file over
//! defaults, checked once, then turned into the core's [`Config`] and the storage
//! engine's configuration.
//!
//! Every flag has the same name in the file with underscores (`--client-address` is
//! `client_address = "..."`); a flag given on the command line wins over the file.
//! Unknown keys in the file are an error, so a typo never silently does nothing.
//!
//! The initial cluster is a member list, `--members 1@127.0.0.1:7380,2@127.0.0.1:7382`:
//! nodes started with the same list form one cluster at once. A node with no list and
//! no seeds forms a cluster of its own; a node with seeds and no list joins through
//! them (`RINGKV.JOIN` does the same at run time).

use clap::{Args, Parser, Subcommand};
use ringkv_core::node::Config;
use ringkv_core::placement::Member;
use ringkv_core::quorum::SyncWrites;
use ringkv_core::version::NodeId;
use ringkv_storage::Durability;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `ringkv-node`: one node of a ringkv cluster, or a local development cluster.
#[derive(Debug, Parser)]
#[command(name = "ringkv-node", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    #[command(flatten)]
    pub node: NodeFlags,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Start a local cluster on 127.0.0.1 (each node its own process) and print how to
    /// reach it; Ctrl-C stops every node.
    Dev(DevFlags),
}

/// Flags of `ringkv-node dev`.
#[derive(Debug, Args)]
pub struct DevFlags {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Directory for the nodes' data (one subdirectory each); default: a new temporary
    /// directory, removed at exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Client port of the first node; node i uses base + 2i for clients and
    /// base + 2i + 1 for peers.
    #[arg(long, default_value_t = 7379)]
    pub base_port: u16,
    /// Durability mode of every node (always, group, interval:<ms>, none).
    #[arg(long, default_value = "group")]
    pub durability: String,
}

/// Flags of a node. Each is optional here so the TOML file can supply it.
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFlags {
    /// TOML file with any of these settings (flags win over the file).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id (1 to 2^62-1). Kept in the data directory after the first start;
    /// default: the stored id, or a random one for a new directory.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Human-readable name for logs and INFO (default: node-<id>).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Cluster id: peers of another cluster are refused (default 1).
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Where clients connect, RESP (default 127.0.0.1:7379).
    #[arg(long)]
    pub client_address: Option<SocketAddr>,
    /// Where peers connect (default 127.0.0.1:7380).
    #[arg(long)]
    pub peer_address: Option<SocketAddr>,
    /// The peer address other nodes are told to use, when it is not the one the node
    /// listens on (a proxy, a NAT, a port forward; default: `--peer-address`).
    #[arg(long)]
    pub peer_advertise_address: Option<SocketAddr>,
    /// Directory for this node's data and identity (default ./ringkv-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The initial cluster, as id@peer-address pairs separated by commas. Every node
    /// started with the same list is a member at once.
    #[arg(long, value_delimiter = ',')]
    pub members: Option<Vec<String>>,
    /// Peer addresses of nodes to join through (and to gossip with now and then).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<SocketAddr>>,
    /// N: copies of each key (default 3, or the member count when smaller).
    #[arg(long)]
    pub replicas: Option<u8>,
    /// R when a request names none (default 2, or N when smaller).
    #[arg(long)]
    pub read_quorum: Option<u8>,
    /// W when a request names none (default 2, or N when smaller).
    #[arg(long)]
    pub write_quorum: Option<u8>,
    /// This node's share of the data relative to others (default 1).
    #[arg(long)]
    pub weight: Option<u32>,
    /// Failure domain (rack or zone number); replicas spread over zones.
    #[arg(long)]
    pub zone: Option<u32>,
    /// always, group (default: concurrent writes share one fsync), interval:<ms>, none.
    #[arg(long)]
    pub durability: Option<String>,
    /// Which replicas of a write sync it before acknowledging, when a request does not
    /// say (VSET ... SYNC): one (default: the replica that mints the write; the others
    /// acknowledge once it is in their log and sync within --sync-interval-ms, the
    /// paper's buffered writes) or all.
    #[arg(long)]
    pub sync_writes: Option<String>,
    /// How often buffered writes are synced, in milliseconds (default 100).
    #[arg(long)]
    pub sync_interval_ms: Option<u32>,
    /// Who writes replies in ringkv-node: auto (default: the event loop, or a sender
    /// thread while the loop is saturated), always (the sender thread whenever a
    /// wakeup has two or more connections to write), never (the loop).
    /// ringkv-node-uring sends through its ring and ignores it.
    #[arg(long)]
    pub reply_sender: Option<String>,
    /// Client connections at once; past it new connections are refused (default 1024).
    #[arg(long)]
    pub connections_max: Option<u32>,
    /// A request that has not reached its quorum by then fails (default 2000).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Coordinated requests in flight at once (default 4096).
    #[arg(long)]
    pub requests_max: Option<u32>,
    /// Hinted writes this node holds for other nodes; past it, hints are refused as
    /// overloaded (default 100000).
    #[arg(long)]
    pub hints_max: Option<u32>,
    /// Bytes of hinted records this node holds for other nodes; past it, hints are
    /// refused as overloaded (default 1073741824, 1 GiB).
    #[arg(long)]
    pub hint_bytes_max: Option<u64>,
    /// One read in this many asks all N replicas (so read repair reaches them all);
    /// the others ask R and ask the rest only when those are slow or fail. 1: every
    /// read asks N, as in the Dynamo paper (default 8).
    #[arg(long)]
    pub full_read_one_in: Option<u32>,
    /// Largest value a client may store, in bytes (default and most 1 MiB).
    #[arg(long)]
    pub value_size_bytes_max: Option<usize>,
    /// Size of each data log segment in MiB (default 64).
    #[arg(long)]
    pub segment_size_mib: Option<u32>,
    /// Bytes written to a store between two index checkpoints, in MiB (default 256):
    /// a restart replays at most about this much log; lower costs more checkpoint
    /// writes.
    #[arg(long)]
    pub checkpoint_interval_mib: Option<u32>,
    /// Grace period before a tombstone every replica holds is reaped (default 60000).
    #[arg(long)]
    pub tombstone_grace_ms: Option<u64>,
    /// One anti-entropy exchange may start per interval, over the next partition this
    /// node replicates (default 1000; lower repairs drifted replicas sooner, at the
    /// cost of more background traffic).
    #[arg(long)]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Clients must `AUTH <password>` (or `HELLO 3 AUTH default <password>`) before any
    /// other command, as with Redis's requirepass. Sent in clear text: without TLS it
    /// keeps out mistakes, not eavesdroppers.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// A secret every node of the cluster is started with: a peer whose hello does not
    /// prove it is refused, as a peer of another cluster id is. Keeps out nodes started
    /// without it, not a listener on the network (peer traffic has no TLS).
    #[arg(long)]
    pub peer_secret: Option<String>,
}

/// Settings that cannot work, with the reason a person can act on.
#[derive(Debug)]
pub enum SettingsError {
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    ParseFile {
        path: PathBuf,
        error: String,
    },
    Member(String),
    Durability(String),
    Invalid(String),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::ReadFile { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            SettingsError::ParseFile { path, error } => {
                write!(f, "{}: {error}", path.display())
            }
            SettingsError::Member(text) => write!(
                f,
                "member {text:?} is not id@address (for example 1@127.0.0.1:7380)"
            ),
            SettingsError::Durability(error) => f.write_str(error),
            SettingsError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for SettingsError {}

/// One member of the initial cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub id: NodeId,
    pub peer_address: SocketAddr,
}

/// Who writes a mio node's replies (`--reply-sender`; see `ringkv_mio::sender`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySender {
    /// The sender thread while the event loop is saturated, the loop otherwise.
    Auto,
    /// The sender thread whenever a wakeup writes two or more connections.
    Always,
    /// The event loop.
    Never,
}

/// Everything a node needs, defaults filled in and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `None`: take the stored id, or draw one (see `identity`).
    pub node_id: Option<u64>,
    pub node_name: Option<String>,
    pub cluster_id: u64,
    pub client_address: SocketAddr,
    pub peer_address: SocketAddr,
    /// What gossip tells other nodes to connect to (default: `peer_address`).
    pub peer_advertise_address: SocketAddr,
    pub data_dir: PathBuf,
    pub members: Vec<InitialMember>,
    pub seeds: Vec<SocketAddr>,
    pub replicas: Option<u8>,
    pub read_quorum: Option<u8>,
    pub write_quorum: Option<u8>,
    pub weight: u32,
    pub zone: Option<u32>,
    pub durability: Durability,
    pub sync_writes: Option<SyncWrites>,
    /// How often buffered writes are synced (`durability` `interval:<ms>` sets its own).
    pub sync_interval_ms: u32,
    pub reply_sender: ReplySender,
    pub connections_max: u32,
    pub request_timeout_ms: Option<u64>,
    pub requests_max: Option<u32>,
    pub hints_max: Option<u32>,
    pub hint_bytes_max: Option<u64>,
    pub full_read_one_in: Option<u32>,
    pub value_size_bytes_max: usize,
    pub segment_size_bytes: u32,
    pub checkpoint_interval_bytes: u64,
    pub tombstone_grace_ms: Option<u64>,
    pub anti_entropy_interval_ms: Option<u64>,
    /// The password clients must give with AUTH; `None`: no AUTH needed.
    pub requirepass: Option<String>,
    /// The cluster's peer secret; `None`: peers are told apart by cluster id only.
    pub peer_secret: Option<String>,
}

/// How often buffered writes are synced by default: a power cut of a replica loses at
/// most about this much of the writes it took buffered (each still durable on the node
/// that minted it).
pub const SYNC_INTERVAL_MS_DEFAULT: u32 = 100;

pub const CLIENT_ADDRESS_DEFAULT: &str = "127.0.0.1:7379";
pub const PEER_ADDRESS_DEFAULT: &str = "127.0.0.1:7380";

impl NodeFlags {
    /// These flags over the file `--config` names (if any).
    pub fn with_file(self) -> Result<NodeFlags, SettingsError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|error| SettingsError::ReadFile {
            path: path.clone(),
            error,
        })?;
        let file: NodeFlags = toml::from_str(&text).map_err(|error| SettingsError::ParseFile {
            path: path.clone(),
            error: error.to_string(),
        })?;
        Ok(self.over(file))
    }

    /// Each field of `self` that is set, else `other`'s.
    fn over(self, other: NodeFlags) -> NodeFlags {
        NodeFlags {
            config: self.config,
            node_id: self.node_id.or(other.node_id),
            node_name: self.node_name.or(other.node_name),
            cluster_id: self.cluster_id.or(other.cluster_id),
            client_address: self.client_address.or(other.client_address),
            peer_address: self.peer_address.or(other.peer_address),
            peer_advertise_address: self.peer_advertise_address.or(other.peer_advertise_address),
            data_dir: self.data_dir.or(other.data_dir),
            members: self.members.or(other.members),
            seeds: self.seeds.or(other.seeds),
            replicas: self.replicas.or(other.replicas),
            read_quorum: self.read_quorum.or(other.read_quorum),
            write_quorum: self.write_quorum.or(other.write_quorum),
            weight: self.weight.or(other.weight),
            zone: self.zone.or(other.zone),
            durability: self.durability.or(other.durability),
            sync_writes: self.sync_writes.or(other.sync_writes),
            sync_interval_ms: self.sync_interval_ms.or(other.sync_interval_ms),
            reply_sender: self.reply_sender.or(other.reply_sender),
            connections_max: self.connections_max.or(other.connections_max),
            request_timeout_ms: self.request_timeout_ms.or(other.request_timeout_ms),
            requests_max: self.requests_max.or(other.requests_max),
            hints_max: self.hints_max.or(other.hints_max),
            hint_bytes_max: self.hint_bytes_max.or(other.hint_bytes_max),
            full_read_one_in: self.full_read_one_in.or(other.full_read_one_in),
            value_size_bytes_max: self.value_size_bytes_max.or(other.value_size_bytes_max),
            segment_size_mib: self.segment_size_mib.or(other.segment_size_mib),
            checkpoint_interval_mib: self
                .checkpoint_interval_mib
                .or(other.checkpoint_interval_mib),
            tombstone_grace_ms: self.tombstone_grace_ms.or(other.tombstone_grace_ms),
            anti_entropy_interval_ms: self
                .anti_entropy_interval_ms
                .or(other.anti_entropy_interval_ms),
            requirepass: self.requirepass.or(other.requirepass),
            peer_secret: self.peer_secret.or(other.peer_secret),
        }
    }

    /// Defaults filled in, every value checked.
    pub fn settle(self) -> Result<Settings, SettingsError> {
        let members = self
            .members
            .unwrap_or_default()
            .iter()
            .map(|text| parse_member(text))
            .collect::<Result<Vec<_>, _>>()?;
        let durability = match &self.durability {
            Some(text) => text
                .parse::<Durability>()
                .map_err(|error| SettingsError::Durability(error.to_string()))?,
            None => Durability::Group,
        };
        let sync_writes = match &self.sync_writes {
            Some(text) => Some(SyncWrites::parse(text.as_bytes()).ok_or_else(|| {
                SettingsError::Invalid(format!("sync_writes is one or all, not {text:?}"))
            })?),
            None => None,
        };
        let reply_sender = match self.reply_sender.as_deref() {
            None | Some("auto") => ReplySender::Auto,
            Some("always") => ReplySender::Always,
            Some("never") => ReplySender::Never,
            Some(text) => {
                return Err(SettingsError::Invalid(format!(
                    "reply_sender is auto, always or never, not {text:?}"
                )));
            }
        };
        let sync_interval_ms = self.sync_interval_ms.unwrap_or(SYNC_INTERVAL_MS_DEFAULT);
        if !(1..=60_000).contains(&sync_interval_ms) {
            return Err(SettingsError::Invalid(
                "sync_interval_ms must lie in 1..=60000".to_owned(),
            ));
        }
        if self.full_read_one_in == Some(0) {
            return Err(SettingsError::Invalid(
                "full_read_one_in must be at least 1 (1: every read asks all N replicas)"
                    .to_owned(),
            ));
        }
        let value_size_bytes_max = self
            .value_size_bytes_max
            .unwrap_or(ringkv_core::limits::VALUE_SIZE_BYTES_MAX);
        if value_size_bytes_max == 0
            || value_size_bytes_max > ringkv_core::limits::VALUE_SIZE_BYTES_MAX
        {
            return Err(SettingsError::Invalid(format!(
                "value_size_bytes_max must lie in 1..={}",
                ringkv_core::limits::VALUE_SIZE_BYTES_MAX
            )));
        }
        let segment_size_mib = self.segment_size_mib.unwrap_or(64);
        if !(16..=1024).contains(&segment_size_mib) {
            return Err(SettingsError::Invalid(
                "segment_size_mib must lie in 16..=1024".to_owned(),
            ));
        }
        let checkpoint_interval_mib = self.checkpoint_interval_mib.unwrap_or(256);
        if !(1..=65_536).contains(&checkpoint_interval_mib) {
            return Err(SettingsError::Invalid(
                "checkpoint_interval_mib must lie in 1..=65536".to_owned(),
            ));
        }
        let connections_max = self.connections_max.unwrap_or(1024);
        if connections_max == 0 {
            return Err(SettingsError::Invalid(
                "connections_max must be at least 1".to_owned(),
            ));
        }
        let peer_address = self
            .peer_address
            .unwrap_or(default_address(PEER_ADDRESS_DEFAULT));
        Ok(Settings {
            node_id: self.node_id,
            node_name: self.node_name,
            cluster_id: self.cluster_id.unwrap_or(1),
            client_address: self
                .client_address
                .unwrap_or(default_address(CLIENT_ADDRESS_DEFAULT)),
            peer_address,
            peer_advertise_address: self.peer_advertise_address.unwrap_or(peer_address),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("ringkv-data")),
            members,
            seeds: self.seeds.unwrap_or_default(),
            replicas: self.replicas,
            read_quorum: self.read_quorum,
            write_quorum: self.write_quorum,
            weight: self.weight.unwrap_or(1),
            zone: self.zone,
            durability,
            sync_writes,
            sync_interval_ms,
            reply_sender,
            connections_max,
            request_timeout_ms: self.request_timeout_ms,
            requests_max: self.requests_max,
            hints_max: self.hints_max,
            hint_bytes_max: self.hint_bytes_max,
            full_read_one_in: self.full_read_one_in,
            value_size_bytes_max,
            segment_size_bytes: segment_size_mib << 20,
            checkpoint_interval_bytes: u64::from(checkpoint_interval_mib) << 20,
            tombstone_grace_ms: self.tombstone_grace_ms,
            anti_entropy_interval_ms: self.anti_entropy_interval_ms,
            requirepass: self.requirepass.filter(|password| !password.is_empty()),
            peer_secret: self.peer_secret.filter(|secret| !secret.is_empty()),
        })
    }
}

fn default_address(text: &str) -> SocketAddr {
    // The defaults are literals that parse; a failure would be a typo caught by the
    // settings tests, and the unspecified address is a safe stand-in meanwhile.
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn parse_member(text: &str) -> Result<InitialMember, SettingsError> {
    let error = || SettingsError::Member(text.to_owned());
    let (id, address) = text.trim().split_once('@').ok_or_else(error)?;
    let id: u64 = id.parse().map_err(|_| error())?;
    let peer_address: SocketAddr = address.parse().map_err(|_| error())?;
    Ok(InitialMember {
        id: NodeId(id),
        peer_address,
    })
}

impl Settings {
    /// The core's configuration for node `id`.
    pub fn core_config(&self, id: NodeId) -> Config {
        let members: Vec<Member> = if self.members.is_empty() && self.seeds.is_empty() {
            vec![Member {
                id,
                weight: self.weight,
                zone: self.zone,
            }]
        } else {
            self.members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    weight: if m.id == id { self.weight } else { 1 },
                    zone: if m.id == id { self.zone } else { None },
                })
                .collect()
        };
        let mut config = Config::new(self.cluster_id, members);
        config.peer_address = self.peer_advertise_address.to_string().into_bytes();
        config.client_address = self.client_address.to_string().into_bytes();
        config.weight = self.weight;
        config.zone = self.zone;
        config.seeds = self
            .seeds
            .iter()
            .map(|s| s.to_string().into_bytes())
            .collect();
        if let Some(replicas) = self.replicas {
            config.replicas = replicas;
            config.read_quorum_default = replicas.min(2);
            config.write_quorum_default = replicas.min(2);
        }
        if let Some(quorum) = self.read_quorum {
            config.read_quorum_default = quorum;
        }
        if let Some(quorum) = self.write_quorum {
            config.write_quorum_default = quorum;
        }
        if let Some(sync) = self.sync_writes {
            config.sync_writes_default = sync;
        }
        if let Some(timeout_ms) = self.request_timeout_ms {
            config.request_timeout_ms = timeout_ms;
        }
        if let Some(requests_max) = self.requests_max {
            config.requests_max = requests_max;
        }
        if let Some(hints_max) = self.hints_max {
            config.hints_max = hints_max;
        }
        if let Some(hint_bytes_max) = self.hint_bytes_max {
            config.hint_bytes_max = hint_bytes_max;
        }
        if let Some(one_in) = self.full_read_one_in {
            config.full_read_one_in = one_in;
        }
        if let Some(grace_ms) = self.tombstone_grace_ms {
            config.tombstone_grace_ms = grace_ms;
        }
        if let Some(interval_ms) = self.anti_entropy_interval_ms {
            config.anti_entropy_interval_ms = interval_ms;
        }
        config.value_size_bytes_max = self.value_size_bytes_max;
        config
    }

    /// The peer address of an initial member.
    pub fn initial_address(&self, id: NodeId) -> Option<SocketAddr> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.peer_address)
    }

    /// Where one of the node's three stores lives.
    pub fn store_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(arguments: &[&str]) -> NodeFlags {
        let mut all = vec!["ringkv-node"];
        all.extend_from_slice(arguments);
        Cli::try_parse_from(all).unwrap().node
    }

    #[test]
    fn defaults_are_loopback_and_group_commit() {
        let settings = flags(&[]).settle().unwrap();
        assert_eq!(settings.client_address.to_string(), CLIENT_ADDRESS_DEFAULT);
        assert_eq!(settings.peer_address.to_string(), PEER_ADDRESS_DEFAULT);
        assert_eq!(settings.peer_advertise_address, settings.peer_address);
        assert_eq!(settings.durability, Durability::Group);
        let config = settings.core_config(NodeId(5));
        assert_eq!(config.members.len(), 1, "alone: a cluster of its own");
        assert_eq!(config.replicas, 1);
    }

    #[test]
    fn gossip_spreads_the_advertised_peer_address() {
        let settings = flags(&[
            "--peer-address",
            "127.0.0.1:9001",
            "--peer-advertise-address",
            "127.0.0.1:9501",
        ])
        .settle()
        .unwrap();
        assert_eq!(settings.peer_address.to_string(), "127.0.0.1:9001");
        let config = settings.core_config(NodeId(5));
        assert_eq!(config.peer_address, b"127.0.0.1:9501");
    }

    #[test]
    fn members_parse_and_bad_ones_are_named() {
        let settings = flags(&["--members", "1@127.0.0.1:7380,2@127.0.0.1:7382"])
            .settle()
            .unwrap();
        assert_eq!(settings.members.len(), 2);
        assert_eq!(
            settings.initial_address(NodeId(2)),
            Some("127.0.0.1:7382".parse().unwrap())
        );
        let error = flags(&["--members", "1:127.0.0.1:7380"])
            .settle()
            .unwrap_err();
        assert!(error.to_string().contains("1:127.0.0.1:7380"), "{error}");
    }

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "node_id = 7\nclient_address = \"127.0.0.1:9000\"\nreplicas = 1\n",
        )
        .unwrap();
        let settings = flags(&[
            "--config",
            path.to_str().unwrap(),
            "--client-address",
            "127.0.0.1:9100",
        ])
        .with_file()
        .unwrap()
        .settle()
        .unwrap();
        assert_eq!(settings.node_id, Some(7));
        assert_eq!(settings.client_address.to_string(), "127.0.0.1:9100");
        std::fs::write(&path, "replica = 1\n").unwrap();
        let error = flags(&["--config", path.to_str().unwrap()])
            .with_file()
            .unwrap_err();
        assert!(error.to_string().contains("replica"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(flags(&["--durability", "sometimes"]).settle().is_err());
        assert!(
            flags(&["--value-size-bytes-max", "2000000"])
                .settle()
                .is_err()
        );
        assert!(flags(&["--connections-max", "0"]).settle().is_err());
        assert!(flags(&["--full-read-one-in", "0"]).settle().is_err());
    }
}
