//! The peer protocol: length-prefixed binary frames between ringkv nodes.
//!
//! Frame layout (all integers little-endian, fixed width):
//!
//! | size | field |
//! |---|---|
//! | 4 | length of everything after this field |
//! | 1 | protocol version ([`PROTOCOL_VERSION`]) |
//! | 8 | cluster id |
//! | 1 | message type |
//! | ... | the message |
//!
//! A frame from another protocol version or another cluster decodes to
//! [`FrameError::Foreign`], so the node can refuse the peer with a clear log line
//! instead of misreading it. Every length and count is checked against [`WireLimits`]
//! before anything is allocated; the decoder never panics. Messages borrow keys and
//! encoded version sets from the input buffer.
//!
//! Many frames can be appended to one buffer and written with one syscall:
//! [`encode_frame`] appends; [`decode_frame`] reads the first frame of a buffer and says
//! how many bytes it used.

use crate::bytes::{DecodeError, PutBytes, Reader};
use crate::version::NodeId;

/// The protocol this build speaks (2: write acknowledgements say whether the replica
/// held a value).
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes before the message: length, version, cluster id, type.
pub const FRAME_HEADER_SIZE_BYTES: usize = 4 + 1 + 8 + 1;

/// Bounds a decoder enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame, header included.
    pub frame_size_bytes_max: usize,
    pub key_size_bytes_max: usize,
    /// Largest encoded version set (all siblings of a key).
    pub versions_size_bytes_max: usize,
    /// Most items in any list (members, hashes, transferred keys).
    pub list_length_max: usize,
}

impl Default for WireLimits {
    fn default() -> WireLimits {
        WireLimits {
            frame_size_bytes_max: 8 << 20,
            key_size_bytes_max: crate::limits::KEY_SIZE_BYTES_MAX,
            versions_size_bytes_max: 8 << 20,
            list_length_max: 4096,
        }
    }
}

/// How a replica answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaStatus {
    Ok,
    /// The replica has nothing for the key.
    NotFound,
    /// The replica's storage failed (disk full, corruption); the coordinator counts it
    /// as no answer.
    StorageFailed,
    /// The replica is overloaded and refused the request.
    Overloaded,
}

/// A member's lifecycle state in the gossiped view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    Joining,
    Up,
    Leaving,
    Left,
}

/// One member as gossip carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRecord<'a> {
    pub id: NodeId,
    pub peer_address: &'a [u8],
    pub client_address: &'a [u8],
    pub weight: u32,
    /// `u32::MAX` when the member has no zone.
    pub zone: u32,
    pub status: MemberStatus,
    /// Entries merge by version: the larger wins. Bumped for status, weight, zone or
    /// address changes.
    pub version: u64,
    /// Bumped by the member itself every gossip round: how others tell it is alive.
    pub heartbeat: u64,
}

/// Every message nodes exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// First frame on a connection: who is talking, and its proof of the cluster's
    /// peer secret ([`hello_proof`]; 0 without one).
    Hello {
        node: NodeId,
        proof: u64,
    },
    /// Liveness probe (failure detection).
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Read a key's versions.
    ReplicaGet {
        request: u64,
        key: &'a [u8],
    },
    /// `versions` is an encoded version set, empty unless `status` is `Ok`.
    ReplicaGetReply {
        request: u64,
        status: ReplicaStatus,
        versions: &'a [u8],
    },
    /// Store (merge) versions. `hint` names the intended owner when the receiver is a
    /// stand-in of a sloppy quorum; also used for read repair and hint delivery.
    ReplicaPut {
        request: u64,
        key: &'a [u8],
        versions: &'a [u8],
        hint: Option<NodeId>,
    },
    /// Sent only after the write is durable. `held_value`: before this write, the
    /// replica's copy held a value (its last-write-wins pick was not a delete), which
    /// is how a DEL learns whether the key existed.
    ReplicaPutReply {
        request: u64,
        status: ReplicaStatus,
        held_value: bool,
    },
    /// A client's write handed to a replica to coordinate: only a replica may mint the
    /// write's dot (against its own stored versions), so a node that is not one of the
    /// key's replicas forwards the write here. `value` is `None` for a delete.
    ForwardPut {
        request: u64,
        key: &'a [u8],
        /// The client's context token (empty: none).
        context: &'a [u8],
        /// A plain SET or DEL: the write supersedes whatever the replica holds
        /// (`context` is then empty), the Redis habit of design.md section 7.
        plain: bool,
        value: Option<&'a [u8]>,
        timestamp_ms: u64,
        write_quorum: u8,
    },
    /// The outcome of a forwarded write; `context` is the new context token when
    /// `status` is `Ok`, `held_value` whether a replica that took it held a value
    /// before (see `ReplicaPutReply`).
    ForwardPutReply {
        request: u64,
        status: ReplicaStatus,
        context: &'a [u8],
        held_value: bool,
    },
    /// Gossip: the sender's membership view; the receiver answers with its own.
    Gossip {
        members: Vec<MemberRecord<'a>>,
    },
    GossipReply {
        members: Vec<MemberRecord<'a>>,
    },
    /// Anti-entropy: a partition's hash tree. Level 0 carries the sender's root (one
    /// entry); the answer is level 1, every bucket `(index, hash)` of the answerer's
    /// tree, or no entries when the roots already agree. `request` names the exchange.
    TreeHashes {
        request: u64,
        partition: u32,
        level: u8,
        hashes: Vec<(u32, u64)>,
    },
    /// Anti-entropy: per key of one bucket, a hash of its stored versions. The
    /// receiver sends back the keys it holds differently (as merges), and answers a
    /// request (`reply` false) with its own list.
    KeyHashes {
        request: u64,
        partition: u32,
        bucket: u32,
        reply: bool,
        keys: Vec<(&'a [u8], u64)>,
    },
    /// Handoff: a node that no longer replicates `partition` offers one page of a
    /// bucket's keys, each with its record's entry hash, to a replica of it.
    HandoffOffer {
        request: u64,
        partition: u32,
        bucket: u32,
        keys: Vec<(&'a [u8], u64)>,
    },
    /// The replica's answer to an offer: the positions of the offered keys it lacks
    /// or holds differently (the offerer sends those as `ReplicaPut`s).
    HandoffNeed {
        request: u64,
        wanted: Vec<u32>,
    },
    /// Reaping: a node about to reap tombstones asks every member what could bring a
    /// deleted value back.
    ReapQuery {
        request: u64,
    },
    /// The answer: the partitions this node holds hints of, or data of it no longer
    /// replicates (`complete` false: it cannot tell yet, or the list is too long).
    ReapStatus {
        request: u64,
        complete: bool,
        partitions: Vec<u32>,
    },
    /// Reaping: remove each key of `partition` whose record's entry hash is still the
    /// one given (every replica held that tombstone for the grace period).
    ReapKeys {
        partition: u32,
        keys: Vec<(&'a [u8], u64)>,
    },
}

/// Why a frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not a whole frame yet.
    Incomplete { needed: usize },
    /// Another protocol version or another cluster: refuse the peer.
    Foreign { version: u8, cluster_id: u64 },
    /// A broken frame: close the connection.
    Invalid(&'static str),
}

impl From<DecodeError> for FrameError {
    fn from(error: DecodeError) -> FrameError {
        match error {
            // Inside a frame whose length is known, running short means a lying length.
            DecodeError::Incomplete { .. } => FrameError::Invalid("message shorter than its frame"),
            DecodeError::Invalid(reason) => FrameError::Invalid(reason),
        }
    }
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const PING: u8 = 2;
    pub const PONG: u8 = 3;
    pub const REPLICA_GET: u8 = 4;
    pub const REPLICA_GET_REPLY: u8 = 5;
    pub const REPLICA_PUT: u8 = 6;
    pub const REPLICA_PUT_REPLY: u8 = 7;
    pub const GOSSIP: u8 = 8;
    pub const GOSSIP_REPLY: u8 = 9;
    pub const TREE_HASHES: u8 = 10;
    pub const KEY_HASHES: u8 = 11;
    pub const HANDOFF_OFFER: u8 = 12;
    pub const HANDOFF_NEED: u8 = 13;
    pub const FORWARD_PUT: u8 = 14;
    pub const FORWARD_PUT_REPLY: u8 = 15;
    pub const REAP_QUERY: u8 = 16;
    pub const REAP_STATUS: u8 = 17;
    pub const REAP_KEYS: u8 = 18;
}

/// ForwardPut flag bits: a value follows (else a delete); a plain write.
const FORWARD_FLAG_VALUE: u8 = 1;
const FORWARD_FLAG_PLAIN: u8 = 2;

/// A message that cannot be framed: a field longer than its length prefix can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeError(pub &'static str);

/// Appends one frame of `message` for `cluster_id` to `out` and returns its size. On
/// error `out` is left as it was.
pub fn encode_frame(
    out: &mut Vec<u8>,
    cluster_id: u64,
    message: &Message<'_>,
) -> Result<usize, EncodeError> {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u64(cluster_id);
    let encoded = encode_message(out, message).and_then(|()| {
        u32::try_from(out.len() - start - 4).map_err(|_| EncodeError("frame longer than u32"))
    });
    match encoded {
        Ok(length) => {
            out[start..start + 4].copy_from_slice(&length.to_le_bytes());
            Ok(out.len() - start)
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

fn put_bytes_u32(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EncodeError> {
    out.put_u32(u32::try_from(bytes.len()).map_err(|_| EncodeError("bytes longer than u32"))?);
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_key(out: &mut Vec<u8>, key: &[u8]) -> Result<(), EncodeError> {
    out.put_u16(
        u16::try_from(key.len()).map_err(|_| EncodeError("key or address longer than u16"))?,
    );
    out.extend_from_slice(key);
    Ok(())
}

fn put_count(out: &mut Vec<u8>, count: usize) -> Result<(), EncodeError> {
    out.put_u16(u16::try_from(count).map_err(|_| EncodeError("list longer than u16"))?);
    Ok(())
}

fn status_code(status: ReplicaStatus) -> u8 {
    match status {
        ReplicaStatus::Ok => 0,
        ReplicaStatus::NotFound => 1,
        ReplicaStatus::StorageFailed => 2,
        ReplicaStatus::Overloaded => 3,
    }
}

fn encode_members(out: &mut Vec<u8>, members: &[MemberRecord<'_>]) -> Result<(), EncodeError> {
    put_count(out, members.len())?;
    for member in members {
        out.put_u64(member.id.0);
        put_key(out, member.peer_address)?;
        put_key(out, member.client_address)?;
        out.put_u32(member.weight);
        out.put_u32(member.zone);
        out.put_u8(match member.status {
            MemberStatus::Joining => 0,
            MemberStatus::Up => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Left => 3,
        });
        out.put_u64(member.version);
        out.put_u64(member.heartbeat);
    }
    Ok(())
}

fn encode_message(out: &mut Vec<u8>, message: &Message<'_>) -> Result<(), EncodeError> {
    match message {
        Message::Hello { node, proof } => {
            out.put_u8(kind::HELLO);
            out.put_u64(node.0);
            out.put_u64(*proof);
        }
        Message::Ping { nonce } => {
            out.put_u8(kind::PING);
            out.put_u64(*nonce);
        }
        Message::Pong { nonce } => {
            out.put_u8(kind::PONG);
            out.put_u64(*nonce);
        }
        Message::ReplicaGet { request, key } => {
            out.put_u8(kind::REPLICA_GET);
            out.put_u64(*request);
            put_key(out, key)?;
        }
        Message::ReplicaGetReply {
            request,
            status,
            versions,
        } => {
            out.put_u8(kind::REPLICA_GET_REPLY);
            out.put_u64(*request);
            out.put_u8(status_code(*status));
            put_bytes_u32(out, versions)?;
        }
        Message::ReplicaPut {
            request,
            key,
            versions,
            hint,
        } => {
            out.put_u8(kind::REPLICA_PUT);
            out.put_u64(*request);
            put_key(out, key)?;
            put_bytes_u32(out, versions)?;
            match hint {
                Some(node) => {
                    out.put_u8(1);
                    out.put_u64(node.0);
                }
                None => out.put_u8(0),
            }
        }
        Message::ReplicaPutReply {
            request,
            status,
            held_value,
        } => {
            out.put_u8(kind::REPLICA_PUT_REPLY);
            out.put_u64(*request);
            out.put_u8(status_code(*status));
            out.put_u8(u8::from(*held_value));
        }
        Message::ForwardPut {
            request,
            key,
            context,
            plain,
            value,
            timestamp_ms,
            write_quorum,
        } => {
            out.put_u8(kind::FORWARD_PUT);
            out.put_u64(*request);
            put_key(out, key)?;
            put_key(out, context)?;
            let plain_flag = if *plain { FORWARD_FLAG_PLAIN } else { 0 };
            match value {
                Some(value) => {
                    out.put_u8(FORWARD_FLAG_VALUE | plain_flag);
                    put_bytes_u32(out, value)?;
                }
                None => out.put_u8(plain_flag),
            }
            out.put_u64(*timestamp_ms);
            out.put_u8(*write_quorum);
        }
        Message::ForwardPutReply {
            request,
            status,
            context,
            held_value,
        } => {
            out.put_u8(kind::FORWARD_PUT_REPLY);
            out.put_u64(*request);
            out.put_u8(status_code(*status));
            put_key(out, context)?;
            out.put_u8(u8::from(*held_value));
        }
        Message::Gossip { members } => {
            out.put_u8(kind::GOSSIP);
            encode_members(out, members)?;
        }
        Message::GossipReply { members } => {
            out.put_u8(kind::GOSSIP_REPLY);
            encode_members(out, members)?;
        }
        Message::TreeHashes {
            request,
            partition,
            level,
            hashes,
        } => {
            out.put_u8(kind::TREE_HASHES);
            out.put_u64(*request);
            out.put_u32(*partition);
            out.put_u8(*level);
            put_count(out, hashes.len())?;
            for (bucket, hash) in hashes {
                out.put_u32(*bucket);
                out.put_u64(*hash);
            }
        }
        Message::KeyHashes {
            request,
            partition,
            bucket,
            reply,
            keys,
        } => {
            out.put_u8(kind::KEY_HASHES);
            out.put_u64(*request);
            out.put_u32(*partition);
            out.put_u32(*bucket);
            out.put_u8(u8::from(*reply));
            put_count(out, keys.len())?;
            for (key, hash) in keys {
                put_key(out, key)?;
                out.put_u64(*hash);
            }
        }
        Message::HandoffOffer {
            request,
            partition,
            bucket,
            keys,
        } => {
            out.put_u8(kind::HANDOFF_OFFER);
            out.put_u64(*request);
            out.put_u32(*partition);
            out.put_u32(*bucket);
            put_count(out, keys.len())?;
            for (key, hash) in keys {
                put_key(out, key)?;
                out.put_u64(*hash);
            }
        }
        Message::HandoffNeed { request, wanted } => {
            out.put_u8(kind::HANDOFF_NEED);
            out.put_u64(*request);
            put_count(out, wanted.len())?;
            for position in wanted {
                out.put_u32(*position);
            }
        }
        Message::ReapQuery { request } => {
            out.put_u8(kind::REAP_QUERY);
            out.put_u64(*request);
        }
        Message::ReapStatus {
            request,
            complete,
            partitions,
        } => {
            out.put_u8(kind::REAP_STATUS);
            out.put_u64(*request);
            out.put_u8(u8::from(*complete));
            put_count(out, partitions.len())?;
            for partition in partitions {
                out.put_u32(*partition);
            }
        }
        Message::ReapKeys { partition, keys } => {
            out.put_u8(kind::REAP_KEYS);
            out.put_u32(*partition);
            put_count(out, keys.len())?;
            for (key, hash) in keys {
                put_key(out, key)?;
                out.put_u64(*hash);
            }
        }
    }
    Ok(())
}

/// What node `node` of cluster `cluster_id` puts in its `Hello` when the cluster's peer
/// secret is `secret` (0 without a secret). A receiver that has the secret refuses a
/// hello whose proof differs. It is a keyed digest, not a signature: it keeps out
/// nodes started without the secret (another deployment, a stray process), not a
/// listener on the network, who can replay a hello it saw (peer traffic has no TLS).
pub fn hello_proof(secret: &[u8], cluster_id: u64, node: NodeId) -> u64 {
    if secret.is_empty() {
        return 0;
    }
    let seed = cluster_id ^ node.0.rotate_left(32);
    xxhash_rust::xxh3::xxh3_64_with_seed(secret, seed).max(1)
}

/// Decodes the first frame of `input`: the message and the frame's size in bytes.
/// A frame of the right version whose cluster id differs from `cluster_id` is
/// [`FrameError::Foreign`].
pub fn decode_frame<'a>(
    input: &'a [u8],
    cluster_id: u64,
    limits: WireLimits,
) -> Result<(Message<'a>, usize), FrameError> {
    let mut header = Reader::new(input);
    let length = match header.u32() {
        Ok(length) => length as usize,
        Err(_) => {
            return Err(FrameError::Incomplete {
                needed: 4 - input.len(),
            });
        }
    };
    if length + 4 > limits.frame_size_bytes_max {
        return Err(FrameError::Invalid("frame over the size limit"));
    }
    if length < FRAME_HEADER_SIZE_BYTES - 4 {
        return Err(FrameError::Invalid("frame shorter than its header"));
    }
    let Some(frame) = input.get(4..4 + length) else {
        return Err(FrameError::Incomplete {
            needed: 4 + length - input.len(),
        });
    };
    let mut reader = Reader::new(frame);
    let version = reader.u8()?;
    let sender_cluster = reader.u64()?;
    if version != PROTOCOL_VERSION || sender_cluster != cluster_id {
        return Err(FrameError::Foreign {
            version,
            cluster_id: sender_cluster,
        });
    }
    let message = decode_message(&mut reader, limits)?;
    reader.finish("trailing bytes in a frame")?;
    Ok((message, 4 + length))
}

fn key<'a>(reader: &mut Reader<'a>, limits: WireLimits) -> Result<&'a [u8], DecodeError> {
    let length = usize::from(reader.u16()?);
    if length > limits.key_size_bytes_max {
        return Err(DecodeError::Invalid("key over the size limit"));
    }
    reader.slice(length)
}

fn versions<'a>(reader: &mut Reader<'a>, limits: WireLimits) -> Result<&'a [u8], DecodeError> {
    let length = reader.length_u32(
        limits.versions_size_bytes_max,
        "versions over the size limit",
    )?;
    reader.slice(length)
}

/// A context token (u16 length): bounded by the longest token a context can make.
fn context<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let length = usize::from(reader.u16()?);
    if length > crate::version::CONTEXT_TOKEN_LENGTH_MAX {
        return Err(DecodeError::Invalid("context over the size limit"));
    }
    reader.slice(length)
}

fn flag(reader: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid("a flag other than 0 or 1")),
    }
}

fn status(reader: &mut Reader<'_>) -> Result<ReplicaStatus, DecodeError> {
    match reader.u8()? {
        0 => Ok(ReplicaStatus::Ok),
        1 => Ok(ReplicaStatus::NotFound),
        2 => Ok(ReplicaStatus::StorageFailed),
        3 => Ok(ReplicaStatus::Overloaded),
        _ => Err(DecodeError::Invalid("unknown replica status")),
    }
}

fn list_length(
    reader: &mut Reader<'_>,
    limits: WireLimits,
    item_size_bytes_min: usize,
) -> Result<usize, DecodeError> {
    let count = reader.count_u16(limits.list_length_max, "list longer than the limit")?;
    // Each item takes at least this many bytes: a count the frame cannot hold is a lie,
    // refused before `Vec::with_capacity` trusts it.
    if count * item_size_bytes_min > reader.remaining() {
        return Err(DecodeError::Invalid("list longer than its frame"));
    }
    Ok(count)
}

fn members<'a>(
    reader: &mut Reader<'a>,
    limits: WireLimits,
) -> Result<Vec<MemberRecord<'a>>, DecodeError> {
    let count = list_length(reader, limits, 8 + 2 + 2 + 4 + 4 + 1 + 8 + 8)?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = NodeId(reader.u64()?);
        let peer_address = key(reader, limits)?;
        let client_address = key(reader, limits)?;
        let weight = reader.u32()?;
        let zone = reader.u32()?;
        let status = match reader.u8()? {
            0 => MemberStatus::Joining,
            1 => MemberStatus::Up,
            2 => MemberStatus::Leaving,
            3 => MemberStatus::Left,
            _ => return Err(DecodeError::Invalid("unknown member status")),
        };
        let version = reader.u64()?;
        let heartbeat = reader.u64()?;
        members.push(MemberRecord {
            id,
            peer_address,
            client_address,
            weight,
            zone,
            status,
            version,
            heartbeat,
        });
    }
    Ok(members)
}

fn decode_message<'a>(
    reader: &mut Reader<'a>,
    limits: WireLimits,
) -> Result<Message<'a>, DecodeError> {
    let message = match reader.u8()? {
        kind::HELLO => Message::Hello {
            node: NodeId(reader.u64()?),
            proof: reader.u64()?,
        },
        kind::PING => Message::Ping {
            nonce: reader.u64()?,
        },
        kind::PONG => Message::Pong {
            nonce: reader.u64()?,
        },
        kind::REPLICA_GET => Message::ReplicaGet {
            request: reader.u64()?,
            key: key(reader, limits)?,
        },
        kind::REPLICA_GET_REPLY => Message::ReplicaGetReply {
            request: reader.u64()?,
            status: status(reader)?,
            versions: versions(reader, limits)?,
        },
        kind::REPLICA_PUT => Message::ReplicaPut {
            request: reader.u64()?,
            key: key(reader, limits)?,
            versions: versions(reader, limits)?,
            hint: match reader.u8()? {
                0 => None,
                1 => Some(NodeId(reader.u64()?)),
                _ => return Err(DecodeError::Invalid("bad hint flag")),
            },
        },
        kind::REPLICA_PUT_REPLY => Message::ReplicaPutReply {
            request: reader.u64()?,
            status: status(reader)?,
            held_value: flag(reader)?,
        },
        kind::FORWARD_PUT => {
            let request = reader.u64()?;
            let key = key(reader, limits)?;
            let context = context(reader)?;
            let flags = reader.u8()?;
            if flags & !(FORWARD_FLAG_VALUE | FORWARD_FLAG_PLAIN) != 0 {
                return Err(DecodeError::Invalid("bad forwarded write flags"));
            }
            let value = if flags & FORWARD_FLAG_VALUE != 0 {
                Some(versions(reader, limits)?)
            } else {
                None
            };
            Message::ForwardPut {
                request,
                key,
                context,
                plain: flags & FORWARD_FLAG_PLAIN != 0,
                value,
                timestamp_ms: reader.u64()?,
                write_quorum: reader.u8()?,
            }
        }
        kind::FORWARD_PUT_REPLY => Message::ForwardPutReply {
            request: reader.u64()?,
            status: status(reader)?,
            context: context(reader)?,
            held_value: flag(reader)?,
        },
        kind::GOSSIP => Message::Gossip {
            members: members(reader, limits)?,
        },
        kind::GOSSIP_REPLY => Message::GossipReply {
            members: members(reader, limits)?,
        },
        kind::TREE_HASHES => {
            let request = reader.u64()?;
            let partition = reader.u32()?;
            let level = reader.u8()?;
            let count = list_length(reader, limits, 12)?;
            let mut hashes = Vec::with_capacity(count);
            for _ in 0..count {
                hashes.push((reader.u32()?, reader.u64()?));
            }
            Message::TreeHashes {
                request,
                partition,
                level,
                hashes,
            }
        }
        kind::KEY_HASHES => {
            let request = reader.u64()?;
            let partition = reader.u32()?;
            let bucket = reader.u32()?;
            let reply = flag(reader)?;
            let count = list_length(reader, limits, 2 + 8)?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push((key(reader, limits)?, reader.u64()?));
            }
            Message::KeyHashes {
                request,
                partition,
                bucket,
                reply,
                keys,
            }
        }
        kind::HANDOFF_OFFER => {
            let request = reader.u64()?;
            let partition = reader.u32()?;
            let bucket = reader.u32()?;
            let count = list_length(reader, limits, 2 + 8)?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push((key(reader, limits)?, reader.u64()?));
            }
            Message::HandoffOffer {
                request,
                partition,
                bucket,
                keys,
            }
        }
        kind::HANDOFF_NEED => {
            let request = reader.u64()?;
            let count = list_length(reader, limits, 4)?;
            let mut wanted = Vec::with_capacity(count);
            for _ in 0..count {
                wanted.push(reader.u32()?);
            }
            Message::HandoffNeed { request, wanted }
        }
        kind::REAP_QUERY => Message::ReapQuery {
            request: reader.u64()?,
        },
        kind::REAP_STATUS => {
            let request = reader.u64()?;
            let complete = flag(reader)?;
            let count = list_length(reader, limits, 4)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                partitions.push(reader.u32()?);
            }
            Message::ReapStatus {
                request,
                complete,
                partitions,
            }
        }
        kind::REAP_KEYS => {
            let partition = reader.u32()?;
            let count = list_length(reader, limits, 2 + 8)?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push((key(reader, limits)?, reader.u64()?));
            }
            Message::ReapKeys { partition, keys }
        }
        _ => return Err(DecodeError::Invalid("unknown message type")),
    };
    Ok(message)
}

/// Fuzz entry point: arbitrary bytes never panic the decoder, and a decoded frame
/// re-encodes to exactly the bytes it came from.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_frame(data: &[u8]) {
    let cluster_id = match data.get(5..13) {
        Some(bytes) => u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])),
        None => 0,
    };
    if let Ok((message, size)) = decode_frame(data, cluster_id, WireLimits::default()) {
        let mut again = Vec::new();
        assert_eq!(encode_frame(&mut again, cluster_id, &message), Ok(size));
        assert_eq!(again, &data[..size]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u64 = 0xC1A5_7E2D;

    /// One of every message, with every optional field in both states.
    pub(crate) fn every_message() -> Vec<Message<'static>> {
        let member = MemberRecord {
            id: NodeId(7),
            peer_address: b"127.0.0.1:7380",
            client_address: b"127.0.0.1:7379",
            weight: 2,
            zone: u32::MAX,
            status: MemberStatus::Up,
            version: 12,
            heartbeat: 40,
        };
        vec![
            Message::Hello {
                node: NodeId(42),
                proof: 7,
            },
            Message::Ping { nonce: 1 },
            Message::Pong { nonce: 1 },
            Message::ReplicaGet {
                request: 9,
                key: b"cart:1",
            },
            Message::ReplicaGetReply {
                request: 9,
                status: ReplicaStatus::Ok,
                versions: b"\x01\x00\x00\x00\x00",
            },
            Message::ReplicaGetReply {
                request: 9,
                status: ReplicaStatus::NotFound,
                versions: b"",
            },
            Message::ReplicaPut {
                request: 10,
                key: b"k",
                versions: b"vvv",
                hint: None,
            },
            Message::ReplicaPut {
                request: 11,
                key: b"k",
                versions: b"vvv",
                hint: Some(NodeId(3)),
            },
            Message::ReplicaPutReply {
                request: 10,
                status: ReplicaStatus::StorageFailed,
                held_value: false,
            },
            Message::ReplicaPutReply {
                request: 10,
                status: ReplicaStatus::Ok,
                held_value: true,
            },
            Message::Gossip {
                members: vec![
                    member,
                    MemberRecord {
                        status: MemberStatus::Leaving,
                        zone: 4,
                        ..member
                    },
                ],
            },
            Message::GossipReply {
                members: vec![
                    MemberRecord {
                        status: MemberStatus::Joining,
                        ..member
                    },
                    MemberRecord {
                        status: MemberStatus::Left,
                        ..member
                    },
                ],
            },
            Message::TreeHashes {
                request: 31,
                partition: 5,
                level: 1,
                hashes: vec![(0, 99), (7, 1)],
            },
            Message::KeyHashes {
                request: 32,
                partition: 5,
                bucket: 7,
                reply: false,
                keys: vec![(b"a", 1), (b"", 2)],
            },
            Message::KeyHashes {
                request: 33,
                partition: 5,
                bucket: 7,
                reply: true,
                keys: Vec::new(),
            },
            Message::HandoffOffer {
                request: 40,
                partition: 5,
                bucket: 63,
                keys: vec![(b"a", 7), (b"", 0)],
            },
            Message::HandoffOffer {
                request: 41,
                partition: 5,
                bucket: 0,
                keys: vec![],
            },
            Message::HandoffNeed {
                request: 40,
                wanted: vec![0, 1],
            },
            Message::HandoffNeed {
                request: 41,
                wanted: vec![],
            },
            Message::ReapQuery { request: 50 },
            Message::ReapStatus {
                request: 50,
                complete: true,
                partitions: vec![0, 1023],
            },
            Message::ReapStatus {
                request: 51,
                complete: false,
                partitions: vec![],
            },
            Message::ReapKeys {
                partition: 9,
                keys: vec![(b"gone", 3), (b"", 0)],
            },
            Message::ForwardPut {
                request: 12,
                key: b"cart:1",
                context: b"AQAAAA",
                plain: false,
                value: Some(b"apples"),
                timestamp_ms: 99,
                write_quorum: 2,
            },
            Message::ForwardPut {
                request: 13,
                key: b"cart:1",
                context: b"",
                plain: true,
                value: None,
                timestamp_ms: 100,
                write_quorum: 1,
            },
            Message::ForwardPutReply {
                request: 12,
                status: ReplicaStatus::Ok,
                context: b"AQAAAA",
                held_value: true,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_frames_concatenate() {
        let mut buffer = Vec::new();
        let messages = every_message();
        for message in &messages {
            encode_frame(&mut buffer, CLUSTER, message).unwrap();
        }
        let mut input = &buffer[..];
        for expected in &messages {
            let (message, size) = decode_frame(input, CLUSTER, WireLimits::default()).unwrap();
            assert_eq!(&message, expected);
            input = &input[size..];
        }
        assert!(input.is_empty());
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_corruption_is_caught_or_harmless() {
        for message in every_message() {
            let mut frame = Vec::new();
            encode_frame(&mut frame, CLUSTER, &message).unwrap();
            for cut in 0..frame.len() {
                assert!(
                    matches!(
                        decode_frame(&frame[..cut], CLUSTER, WireLimits::default()),
                        Err(FrameError::Incomplete { .. })
                    ),
                    "{message:?} cut at {cut}"
                );
            }
            for at in 0..frame.len() {
                for flip in [0x01u8, 0x80, 0xFF] {
                    let mut damaged = frame.clone();
                    damaged[at] ^= flip;
                    // Must not panic; whatever decodes must re-encode identically.
                    fuzz_frame(&damaged);
                }
            }
        }
    }

    #[test]
    fn a_peer_of_another_cluster_or_version_is_foreign() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, CLUSTER, &Message::Ping { nonce: 5 }).unwrap();
        assert_eq!(
            decode_frame(&frame, CLUSTER + 1, WireLimits::default()),
            Err(FrameError::Foreign {
                version: PROTOCOL_VERSION,
                cluster_id: CLUSTER
            })
        );
        frame[4] = PROTOCOL_VERSION + 1;
        assert!(matches!(
            decode_frame(&frame, CLUSTER, WireLimits::default()),
            Err(FrameError::Foreign { .. })
        ));
    }

    #[test]
    fn a_field_too_long_for_its_prefix_is_an_error_and_leaves_the_buffer_alone() {
        let mut out = b"earlier frame".to_vec();
        let key = vec![0u8; 70_000];
        let message = Message::ReplicaGet {
            request: 1,
            key: &key,
        };
        assert_eq!(
            encode_frame(&mut out, CLUSTER, &message),
            Err(EncodeError("key or address longer than u16"))
        );
        assert_eq!(out, b"earlier frame");
    }

    #[test]
    fn lengths_and_counts_are_bounded_before_allocation() {
        let limits = WireLimits::default();
        let mut huge = Vec::new();
        huge.put_u32(u32::MAX);
        assert_eq!(
            decode_frame(&huge, CLUSTER, limits),
            Err(FrameError::Invalid("frame over the size limit"))
        );
        // A gossip frame claiming 4000 members in a few bytes.
        let mut lying = Vec::new();
        lying.put_u32(0);
        lying.put_u8(PROTOCOL_VERSION);
        lying.put_u64(CLUSTER);
        lying.put_u8(kind::GOSSIP);
        lying.put_u16(4000);
        let length = (lying.len() - 4) as u32;
        lying[..4].copy_from_slice(&length.to_le_bytes());
        assert_eq!(
            decode_frame(&lying, CLUSTER, limits),
            Err(FrameError::Invalid("list longer than its frame"))
        );
        let tight = WireLimits {
            key_size_bytes_max: 2,
            ..limits
        };
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            CLUSTER,
            &Message::ReplicaGet {
                request: 1,
                key: b"abc",
            },
        )
        .unwrap();
        assert_eq!(
            decode_frame(&frame, CLUSTER, tight),
            Err(FrameError::Invalid("key over the size limit"))
        );
    }
}
