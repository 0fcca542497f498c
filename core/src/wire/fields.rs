//! How each kind of field is written and read: one codec per shape, so a message is
//! declared once, as a list of fields with their codecs (`mod.rs`, `messages!`).
//!
//! Every length and count is checked against [`WireLimits`] before anything is
//! allocated, and against the bytes left in the frame; a decoder never panics.

use super::{EncodeError, MemberRecord, MemberStatus, ReplicaStatus, WireLimits};
use crate::bytes::{DecodeError, PutBytes, Reader};
use crate::version::NodeId;

/// One field's encoding. `Value` is the field's type in [`super::Message`].
pub(super) trait Codec<'a> {
    type Value;
    fn put(out: &mut Vec<u8>, value: &Self::Value) -> Result<(), EncodeError>;
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<Self::Value, DecodeError>;
}

/// A fixed-width integer.
pub(super) struct U8;
pub(super) struct U32;
pub(super) struct U64;
/// A node id (u64).
pub(super) struct Id;
/// A boolean: one byte, 0 or 1.
pub(super) struct Flag;
/// A [`ReplicaStatus`]: one byte.
pub(super) struct Status;
/// A key or an address: u16 length, at most `key_size_bytes_max`, then the bytes.
pub(super) struct Key;
/// An encoded version set: u32 length, at most `versions_size_bytes_max`, then bytes.
pub(super) struct Versions;
/// A client's context token: u16 length, at most the longest token a context makes.
pub(super) struct Context;
/// An optional node id: a [`Flag`], then the id when set.
pub(super) struct OptionalId;
/// An optional value: a [`Flag`], then [`Versions`]-framed bytes when set.
pub(super) struct OptionalValue;
/// Gossiped members: u16 count, then each member.
pub(super) struct Members;
/// Tree buckets: u16 count, then (u32 bucket, u64 hash) each.
pub(super) struct Buckets;
/// Keys with hashes: u16 count, then ([`Key`], u64 hash) each.
pub(super) struct KeyedHashes;
/// u32 numbers (positions, partitions): u16 count, then each.
pub(super) struct Numbers;
/// Node ids: u16 count, then each as a u64.
pub(super) struct Ids;

impl<'a> Codec<'a> for U8 {
    type Value = u8;
    fn put(out: &mut Vec<u8>, value: &u8) -> Result<(), EncodeError> {
        out.put_u8(*value);
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<u8, DecodeError> {
        reader.u8()
    }
}

impl<'a> Codec<'a> for U32 {
    type Value = u32;
    fn put(out: &mut Vec<u8>, value: &u32) -> Result<(), EncodeError> {
        out.put_u32(*value);
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<u32, DecodeError> {
        reader.u32()
    }
}

impl<'a> Codec<'a> for U64 {
    type Value = u64;
    fn put(out: &mut Vec<u8>, value: &u64) -> Result<(), EncodeError> {
        out.put_u64(*value);
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<u64, DecodeError> {
        reader.u64()
    }
}

impl<'a> Codec<'a> for Id {
    type Value = NodeId;
    fn put(out: &mut Vec<u8>, value: &NodeId) -> Result<(), EncodeError> {
        out.put_u64(value.0);
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<NodeId, DecodeError> {
        reader.u64().map(NodeId)
    }
}

impl<'a> Codec<'a> for Flag {
    type Value = bool;
    fn put(out: &mut Vec<u8>, value: &bool) -> Result<(), EncodeError> {
        out.put_u8(u8::from(*value));
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<bool, DecodeError> {
        match reader.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("a flag other than 0 or 1")),
        }
    }
}

impl<'a> Codec<'a> for Status {
    type Value = ReplicaStatus;
    fn put(out: &mut Vec<u8>, value: &ReplicaStatus) -> Result<(), EncodeError> {
        out.put_u8(match value {
            ReplicaStatus::Ok => 0,
            ReplicaStatus::NotFound => 1,
            ReplicaStatus::StorageFailed => 2,
            ReplicaStatus::Overloaded => 3,
            ReplicaStatus::DiskFull => 4,
            ReplicaStatus::Left => 5,
        });
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<ReplicaStatus, DecodeError> {
        match reader.u8()? {
            0 => Ok(ReplicaStatus::Ok),
            1 => Ok(ReplicaStatus::NotFound),
            2 => Ok(ReplicaStatus::StorageFailed),
            3 => Ok(ReplicaStatus::Overloaded),
            4 => Ok(ReplicaStatus::DiskFull),
            5 => Ok(ReplicaStatus::Left),
            _ => Err(DecodeError::Invalid("unknown replica status")),
        }
    }
}

/// Writes a u16 length and the bytes.
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EncodeError> {
    let length =
        u16::try_from(bytes.len()).map_err(|_| EncodeError("key or address longer than u16"))?;
    out.put_u16(length);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads a u16 length, at most `max`, and that many bytes.
fn get_short<'a>(
    reader: &mut Reader<'a>,
    max: usize,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let length = usize::from(reader.u16()?);
    if length > max {
        return Err(DecodeError::Invalid(what));
    }
    reader.slice(length)
}

impl<'a> Codec<'a> for Key {
    type Value = &'a [u8];
    fn put(out: &mut Vec<u8>, value: &&'a [u8]) -> Result<(), EncodeError> {
        put_short(out, value)
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<&'a [u8], DecodeError> {
        get_short(reader, limits.key_size_bytes_max, "key over the size limit")
    }
}

impl<'a> Codec<'a> for Context {
    type Value = &'a [u8];
    fn put(out: &mut Vec<u8>, value: &&'a [u8]) -> Result<(), EncodeError> {
        put_short(out, value)
    }
    fn get(reader: &mut Reader<'a>, _: WireLimits) -> Result<&'a [u8], DecodeError> {
        let max = crate::version::CONTEXT_TOKEN_LENGTH_MAX;
        get_short(reader, max, "context over the size limit")
    }
}

impl<'a> Codec<'a> for Versions {
    type Value = &'a [u8];
    fn put(out: &mut Vec<u8>, value: &&'a [u8]) -> Result<(), EncodeError> {
        let length =
            u32::try_from(value.len()).map_err(|_| EncodeError("bytes longer than u32"))?;
        out.put_u32(length);
        out.extend_from_slice(value);
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<&'a [u8], DecodeError> {
        let max = limits.versions_size_bytes_max;
        let length = reader.length_u32(max, "versions over the size limit")?;
        reader.slice(length)
    }
}

impl<'a> Codec<'a> for OptionalId {
    type Value = Option<NodeId>;
    fn put(out: &mut Vec<u8>, value: &Option<NodeId>) -> Result<(), EncodeError> {
        Flag::put(out, &value.is_some())?;
        match value {
            Some(id) => Id::put(out, id),
            None => Ok(()),
        }
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<Option<NodeId>, DecodeError> {
        match Flag::get(reader, limits)? {
            true => Id::get(reader, limits).map(Some),
            false => Ok(None),
        }
    }
}

impl<'a> Codec<'a> for OptionalValue {
    type Value = Option<&'a [u8]>;
    fn put(out: &mut Vec<u8>, value: &Option<&'a [u8]>) -> Result<(), EncodeError> {
        Flag::put(out, &value.is_some())?;
        match value {
            Some(bytes) => Versions::put(out, bytes),
            None => Ok(()),
        }
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<Option<&'a [u8]>, DecodeError> {
        match Flag::get(reader, limits)? {
            true => Versions::get(reader, limits).map(Some),
            false => Ok(None),
        }
    }
}

/// Writes a u16 item count.
fn put_count(out: &mut Vec<u8>, count: usize) -> Result<(), EncodeError> {
    out.put_u16(u16::try_from(count).map_err(|_| EncodeError("list longer than u16"))?);
    Ok(())
}

/// Reads a u16 item count, refused past `list_length_max` or when the frame cannot
/// hold that many items of at least `item_size_bytes_min` (so a lying count never
/// reaches `Vec::with_capacity`).
fn get_count(
    reader: &mut Reader<'_>,
    limits: WireLimits,
    item_size_bytes_min: usize,
) -> Result<usize, DecodeError> {
    let count = reader.count_u16(limits.list_length_max, "list longer than the limit")?;
    if count * item_size_bytes_min > reader.remaining() {
        return Err(DecodeError::Invalid("list longer than its frame"));
    }
    Ok(count)
}

/// Smallest encoded member: id, two empty addresses, weight, zone, status, version,
/// heartbeat.
const MEMBER_SIZE_BYTES_MIN: usize = 8 + 2 + 2 + 4 + 4 + 1 + 8 + 8;

impl<'a> Codec<'a> for Members {
    type Value = Vec<MemberRecord<'a>>;
    fn put(out: &mut Vec<u8>, members: &Vec<MemberRecord<'a>>) -> Result<(), EncodeError> {
        put_count(out, members.len())?;
        for member in members {
            out.put_u64(member.id.0);
            put_short(out, member.peer_address)?;
            put_short(out, member.client_address)?;
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
    fn get(
        reader: &mut Reader<'a>,
        limits: WireLimits,
    ) -> Result<Vec<MemberRecord<'a>>, DecodeError> {
        let count = get_count(reader, limits, MEMBER_SIZE_BYTES_MIN)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(MemberRecord {
                id: Id::get(reader, limits)?,
                peer_address: Key::get(reader, limits)?,
                client_address: Key::get(reader, limits)?,
                weight: reader.u32()?,
                zone: reader.u32()?,
                status: match reader.u8()? {
                    0 => MemberStatus::Joining,
                    1 => MemberStatus::Up,
                    2 => MemberStatus::Leaving,
                    3 => MemberStatus::Left,
                    _ => return Err(DecodeError::Invalid("unknown member status")),
                },
                version: reader.u64()?,
                heartbeat: reader.u64()?,
            });
        }
        Ok(members)
    }
}

impl<'a> Codec<'a> for Buckets {
    type Value = Vec<(u32, u64)>;
    fn put(out: &mut Vec<u8>, buckets: &Vec<(u32, u64)>) -> Result<(), EncodeError> {
        put_count(out, buckets.len())?;
        for (bucket, hash) in buckets {
            out.put_u32(*bucket);
            out.put_u64(*hash);
        }
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<Vec<(u32, u64)>, DecodeError> {
        let count = get_count(reader, limits, 4 + 8)?;
        let mut buckets = Vec::with_capacity(count);
        for _ in 0..count {
            buckets.push((reader.u32()?, reader.u64()?));
        }
        Ok(buckets)
    }
}

impl<'a> Codec<'a> for KeyedHashes {
    type Value = Vec<(&'a [u8], u64)>;
    fn put(out: &mut Vec<u8>, keys: &Vec<(&'a [u8], u64)>) -> Result<(), EncodeError> {
        put_count(out, keys.len())?;
        for (key, hash) in keys {
            put_short(out, key)?;
            out.put_u64(*hash);
        }
        Ok(())
    }
    fn get(
        reader: &mut Reader<'a>,
        limits: WireLimits,
    ) -> Result<Vec<(&'a [u8], u64)>, DecodeError> {
        let count = get_count(reader, limits, 2 + 8)?;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push((Key::get(reader, limits)?, reader.u64()?));
        }
        Ok(keys)
    }
}

impl<'a> Codec<'a> for Numbers {
    type Value = Vec<u32>;
    fn put(out: &mut Vec<u8>, numbers: &Vec<u32>) -> Result<(), EncodeError> {
        put_count(out, numbers.len())?;
        for number in numbers {
            out.put_u32(*number);
        }
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<Vec<u32>, DecodeError> {
        let count = get_count(reader, limits, 4)?;
        let mut numbers = Vec::with_capacity(count);
        for _ in 0..count {
            numbers.push(reader.u32()?);
        }
        Ok(numbers)
    }
}

impl<'a> Codec<'a> for Ids {
    type Value = Vec<NodeId>;
    fn put(out: &mut Vec<u8>, ids: &Vec<NodeId>) -> Result<(), EncodeError> {
        put_count(out, ids.len())?;
        for id in ids {
            out.put_u64(id.0);
        }
        Ok(())
    }
    fn get(reader: &mut Reader<'a>, limits: WireLimits) -> Result<Vec<NodeId>, DecodeError> {
        let count = get_count(reader, limits, 8)?;
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(NodeId(reader.u64()?));
        }
        Ok(ids)
    }
}
