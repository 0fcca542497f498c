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

mod fields;

use crate::bytes::{DecodeError, PutBytes, Reader};
use crate::version::NodeId;
use fields::Codec;

/// Declares every message once: its type byte, its fields in wire order, and each
/// field's codec (`fields.rs`). From the table come the [`Message`] enum, its encoder
/// and its decoder, so a new message is one entry here.
macro_rules! messages {
    ($lifetime:lifetime; $(
        $(#[$variant_doc:meta])*
        $kind:literal => $variant:ident {
            $($(#[$field_doc:meta])* $field:ident : $type:ty = $codec:ident),* $(,)?
        }
    ),* $(,)?) => {
        /// Every message nodes exchange.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message<$lifetime> {
            $(
                $(#[$variant_doc])*
                $variant { $($(#[$field_doc])* $field: $type),* },
            )*
        }

        /// Appends `message`'s type byte and fields.
        fn encode_message(out: &mut Vec<u8>, message: &Message<'_>) -> Result<(), EncodeError> {
            match message {
                $(Message::$variant { $($field),* } => {
                    out.put_u8($kind);
                    $(<fields::$codec as Codec>::put(out, $field)?;)*
                })*
            }
            Ok(())
        }

        /// Every message's type byte, in table order.
        #[cfg(test)]
        const MESSAGE_KINDS: &[u8] = &[$($kind),*];

        /// Reads one message: its type byte, then its fields in order.
        fn decode_message<'input>(
            reader: &mut Reader<'input>,
            limits: WireLimits,
        ) -> Result<Message<'input>, DecodeError> {
            Ok(match reader.u8()? {
                $($kind => Message::$variant {
                    $($field: <fields::$codec as Codec>::get(reader, limits)?),*
                },)*
                _ => return Err(DecodeError::Invalid("unknown message type")),
            })
        }
    };
}

/// The protocol this build speaks (2: write acknowledgements say whether the replica
/// held a value; 3: a forwarded write's plain flag and value presence are two fields,
/// as every message is now declared field by field).
pub const PROTOCOL_VERSION: u8 = 4;
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
    /// The replica's disk is full: it refused a forwarded write before storing or
    /// sending anything, so nothing was minted and the forwarder takes the next replica
    /// with the same attempt.
    DiskFull,
    /// The replica has left the cluster (`MemberStatus::Left`): it answers no read and
    /// stores nothing more, so a write takes a stand-in and a forward the next replica,
    /// as for a refusal (nothing was minted).
    Left,
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

messages! { 'a;
    /// First frame on a connection: who is talking, and its proof of the cluster's
    /// peer secret ([`hello_proof`]; 0 without one).
    1 => Hello {
        node: NodeId = Id,
        proof: u64 = U64,
    },
    /// Liveness probe (failure detection).
    2 => Ping { nonce: u64 = U64 },
    3 => Pong { nonce: u64 = U64 },
    /// Read a key's versions.
    4 => ReplicaGet {
        request: u64 = U64,
        key: &'a [u8] = Key,
    },
    /// `versions` is an encoded version set, empty unless `status` is `Ok`.
    5 => ReplicaGetReply {
        request: u64 = U64,
        status: ReplicaStatus = Status,
        versions: &'a [u8] = Versions,
    },
    /// Store (merge) versions. `hint` names the intended owner when the receiver is a
    /// stand-in of a sloppy quorum; also used for read repair and hint delivery.
    ///
    /// `durable`: sync before acknowledging (a hint always is); else a buffered write
    /// (see `node::replica`, "Buffered writes").
    6 => ReplicaPut {
        request: u64 = U64,
        key: &'a [u8] = Key,
        versions: &'a [u8] = Versions,
        hint: Option<NodeId> = OptionalId,
        durable: bool = Flag,
    },
    /// Sent only after the write is durable. `held_value`: before this write, the
    /// replica's copy held a value (its last-write-wins pick was not a delete), which
    /// is how a DEL learns whether the key existed.
    7 => ReplicaPutReply {
        request: u64 = U64,
        status: ReplicaStatus = Status,
        held_value: bool = Flag,
    },
    /// Gossip: the sender's membership view; the receiver answers with its own.
    8 => Gossip { members: Vec<MemberRecord<'a>> = Members },
    9 => GossipReply { members: Vec<MemberRecord<'a>> = Members },
    /// Anti-entropy: a partition's hash tree. Level 0 carries the sender's root (one
    /// entry); the answer is level 1, every bucket `(index, hash)` of the answerer's
    /// tree, or no entries when the roots already agree. `request` names the exchange.
    10 => TreeHashes {
        request: u64 = U64,
        partition: u32 = U32,
        level: u8 = U8,
        hashes: Vec<(u32, u64)> = Buckets,
    },
    /// Anti-entropy: per key of one bucket, a hash of its stored versions. The
    /// receiver sends back the keys it holds differently (as merges), and answers a
    /// request (`reply` false) with its own list.
    11 => KeyHashes {
        request: u64 = U64,
        partition: u32 = U32,
        bucket: u32 = U32,
        reply: bool = Flag,
        keys: Vec<(&'a [u8], u64)> = KeyedHashes,
    },
    /// Handoff: a node that no longer replicates `partition` offers one page of a
    /// bucket's keys, each with its record's entry hash, to a replica of it.
    12 => HandoffOffer {
        request: u64 = U64,
        partition: u32 = U32,
        bucket: u32 = U32,
        keys: Vec<(&'a [u8], u64)> = KeyedHashes,
    },
    /// The replica's answer to an offer: the positions of the offered keys it lacks
    /// or holds differently (the offerer sends those as `ReplicaPut`s).
    13 => HandoffNeed {
        request: u64 = U64,
        wanted: Vec<u32> = Numbers,
    },
    /// A client's write handed to a replica to coordinate: only a replica may mint the
    /// write's dot (against its own stored versions), so a node that is not one of the
    /// key's replicas forwards the write here. `value` is `None` for a delete.
    14 => ForwardPut {
        request: u64 = U64,
        key: &'a [u8] = Key,
        /// The client's context token (empty: none).
        context: &'a [u8] = Context,
        /// A plain SET or DEL: the write supersedes whatever the replica holds
        /// (`context` is then empty), the Redis habit of design.md section 7.
        plain: bool = Flag,
        value: Option<&'a [u8]> = OptionalValue,
        timestamp_ms: u64 = U64,
        write_quorum: u8 = U8,
        /// `SYNC all` (every replica syncs the write), else `SYNC one`.
        sync_all: bool = Flag,
        /// This attempt's one-shot id (see `coordinator::forward`): a first attempt's
        /// value carries it as its alias (`crate::version::Value::alias`), a retry is
        /// minted as the dot `(alias, 1)`.
        alias: NodeId = Id,
        /// The ids of the earlier attempts that may have been minted, the first
        /// attempt's first; empty for a first attempt.
        earlier: Vec<NodeId> = Ids,
    },
    /// The outcome of a forwarded write; `context` is the new context token when
    /// `status` is `Ok`, `held_value` whether a replica that took it held a value
    /// before (see `ReplicaPutReply`).
    15 => ForwardPutReply {
        request: u64 = U64,
        status: ReplicaStatus = Status,
        context: &'a [u8] = Context,
        held_value: bool = Flag,
    },
    /// Reaping: a node about to reap tombstones asks every member what could bring a
    /// deleted value back, under the placement whose digest is `placement`.
    16 => ReapQuery {
        request: u64 = U64,
        placement: u64 = U64,
    },
    /// The answer: the partitions this node holds hints of, or data of it no longer
    /// replicates (`complete` false: it cannot tell yet, the list is too long, or its
    /// view places data otherwise than the query's placement).
    17 => ReapStatus {
        request: u64 = U64,
        complete: bool = Flag,
        partitions: Vec<u32> = Numbers,
    },
    /// Reaping: remove each key of `partition` whose record's entry hash is still the
    /// one given (every replica held that tombstone for the grace period).
    18 => ReapKeys {
        partition: u32 = U32,
        keys: Vec<(&'a [u8], u64)> = KeyedHashes,
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
                durable: false,
            },
            Message::ReplicaPut {
                request: 11,
                key: b"k",
                versions: b"vvv",
                hint: Some(NodeId(3)),
                durable: true,
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
            Message::ReapQuery {
                request: 50,
                placement: 51,
            },
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
                sync_all: false,
                alias: NodeId(1 << 63 | 5),
                earlier: Vec::new(),
            },
            Message::ForwardPut {
                request: 13,
                key: b"cart:1",
                context: b"",
                plain: true,
                value: None,
                timestamp_ms: 100,
                write_quorum: 1,
                sync_all: true,
                alias: NodeId(1 << 63 | 6),
                earlier: vec![NodeId(1 << 63 | 5), NodeId(1 << 63 | 7)],
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
    fn the_test_messages_cover_every_kind_in_the_table() {
        let mut covered = Vec::new();
        for message in every_message() {
            let mut frame = Vec::new();
            encode_frame(&mut frame, CLUSTER, &message).unwrap();
            covered.push(frame[FRAME_HEADER_SIZE_BYTES - 1]);
        }
        for kind in MESSAGE_KINDS {
            assert!(covered.contains(kind), "no test message of kind {kind}");
        }
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
        lying.put_u8(8); // Gossip
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
