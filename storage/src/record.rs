//! The on-disk record: one key with its value (or a tombstone), checksummed.
//!
//! Layout, all integers little-endian (24-byte header, then key, then value):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0x6B52` (bytes `R`, `k`) |
//! | 2 | 1 | format version (1) |
//! | 3 | 1 | flags: bit 0 tombstone; other bits must be 0 |
//! | 4 | 2 | key length |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | value length (0 for a tombstone) |
//! | 12 | 8 | sequence: unique per record, increasing in the order of writing |
//! | 20 | 4 | CRC32 over bytes 0..20, the key and the value |
//!
//! Invariants: the checksum is computed on encode and verified on every decode; lengths
//! are checked against the configured bounds before any use; the decoder never panics
//! and never allocates, whatever the bytes.

/// Size of the fixed header.
pub const HEADER_SIZE_BYTES: usize = 24;
/// First two bytes of every record.
pub const MAGIC: u16 = 0x6B52;
/// The record format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Flag bit: the record deletes its key.
pub const FLAG_TOMBSTONE: u8 = 1;

const _: () = assert!(HEADER_SIZE_BYTES == 2 + 1 + 1 + 2 + 2 + 4 + 8 + 4);

/// A record's fixed fields, as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tombstone: bool,
    pub key_size_bytes: u16,
    pub value_size_bytes: u32,
    pub sequence: u64,
    pub crc: u32,
}

impl Header {
    /// Total bytes of the record, header included.
    pub fn record_size_bytes(&self) -> usize {
        size_bytes(
            usize::from(self.key_size_bytes),
            self.value_size_bytes as usize,
        )
    }
}

/// Bytes a record of a `key_size_bytes` key and a `value_size_bytes` value occupies.
pub fn size_bytes(key_size_bytes: usize, value_size_bytes: usize) -> usize {
    HEADER_SIZE_BYTES + key_size_bytes + value_size_bytes
}

/// The bounds a decoder checks lengths against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub key_size_bytes_max: usize,
    pub value_size_bytes_max: usize,
}

/// What a slice of bytes holds at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// More bytes are needed to decide (`needed` in total, when known).
    Incomplete { needed: usize },
    /// Not a valid record.
    Invalid(&'static str),
    /// A whole, verified record.
    Record(Record<'a>),
}

/// A verified record borrowed from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub header: Header,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Record<'_> {
    /// Bytes the record occupies.
    pub fn size_bytes(&self) -> usize {
        self.header.record_size_bytes()
    }
}

/// Appends one encoded record to `out` and returns its size in bytes.
///
/// The caller has already checked `key` and `value` against its bounds; here a length
/// that does not fit its field is a caller bug, reported as an `Err` rather than a
/// truncated record.
pub fn encode(
    out: &mut Vec<u8>,
    sequence: u64,
    key: &[u8],
    value: &[u8],
    tombstone: bool,
) -> Result<usize, &'static str> {
    let key_size_bytes = u16::try_from(key.len()).map_err(|_| "key length does not fit u16")?;
    let value_size_bytes =
        u32::try_from(value.len()).map_err(|_| "value length does not fit u32")?;
    if tombstone && !value.is_empty() {
        return Err("a tombstone carries no value");
    }
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(FORMAT_VERSION);
    out.push(if tombstone { FLAG_TOMBSTONE } else { 0 });
    out.extend_from_slice(&key_size_bytes.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&value_size_bytes.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[start..start + 20]);
    hasher.update(key);
    hasher.update(value);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Ok(out.len() - start)
}

/// Decodes and checks the fixed header at the start of `bytes` (no checksum yet: that
/// needs the key and value).
pub fn decode_header(bytes: &[u8], bounds: Bounds) -> Result<Header, Decoded<'static>> {
    let Some(header) = bytes.get(..HEADER_SIZE_BYTES) else {
        // An all-zero prefix can never become a record: say so early, so that scans
        // stop at preallocated space instead of asking for more bytes.
        if bytes.first().is_some_and(|&b| b != MAGIC.to_le_bytes()[0])
            || bytes.get(1).is_some_and(|&b| b != MAGIC.to_le_bytes()[1])
        {
            return Err(Decoded::Invalid("bad magic"));
        }
        return Err(Decoded::Incomplete {
            needed: HEADER_SIZE_BYTES,
        });
    };
    if u16::from_le_bytes([header[0], header[1]]) != MAGIC {
        return Err(Decoded::Invalid("bad magic"));
    }
    if header[2] != FORMAT_VERSION {
        return Err(Decoded::Invalid("unknown format version"));
    }
    let flags = header[3];
    if flags & !FLAG_TOMBSTONE != 0 {
        return Err(Decoded::Invalid("unknown flag bits"));
    }
    if header[6] != 0 || header[7] != 0 {
        return Err(Decoded::Invalid("reserved bytes are not zero"));
    }
    let key_size_bytes = u16::from_le_bytes([header[4], header[5]]);
    let value_size_bytes = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let sequence = u64::from_le_bytes([
        header[12], header[13], header[14], header[15], header[16], header[17], header[18],
        header[19],
    ]);
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    let tombstone = flags & FLAG_TOMBSTONE != 0;
    if usize::from(key_size_bytes) > bounds.key_size_bytes_max {
        return Err(Decoded::Invalid("key length over the bound"));
    }
    if value_size_bytes as usize > bounds.value_size_bytes_max {
        return Err(Decoded::Invalid("value length over the bound"));
    }
    if tombstone && value_size_bytes != 0 {
        return Err(Decoded::Invalid("tombstone with a value"));
    }
    if sequence == 0 {
        return Err(Decoded::Invalid("sequence zero is never written"));
    }
    Ok(Header {
        tombstone,
        key_size_bytes,
        value_size_bytes,
        sequence,
        crc,
    })
}

/// Decodes and verifies one record at the start of `bytes`.
pub fn decode(bytes: &[u8], bounds: Bounds) -> Decoded<'_> {
    let header = match decode_header(bytes, bounds) {
        Ok(header) => header,
        Err(outcome) => return outcome,
    };
    let size_bytes = header.record_size_bytes();
    let Some(record) = bytes.get(..size_bytes) else {
        return Decoded::Incomplete { needed: size_bytes };
    };
    let key_end = HEADER_SIZE_BYTES + usize::from(header.key_size_bytes);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..20]);
    hasher.update(&record[HEADER_SIZE_BYTES..]);
    if hasher.finalize() != header.crc {
        return Decoded::Invalid("checksum mismatch");
    }
    Decoded::Record(Record {
        header,
        key: &record[HEADER_SIZE_BYTES..key_end],
        value: &record[key_end..],
    })
}

/// Fuzz entry point: decoding arbitrary bytes never panics, and what decodes
/// re-encodes to the same bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_decode(data: &[u8]) {
    let bounds = Bounds {
        key_size_bytes_max: 1024,
        value_size_bytes_max: 1 << 20,
    };
    if let Decoded::Record(record) = decode(data, bounds) {
        let mut again = Vec::new();
        let size = encode(
            &mut again,
            record.header.sequence,
            record.key,
            record.value,
            record.header.tombstone,
        );
        assert_eq!(size, Ok(record.size_bytes()));
        assert_eq!(&again[..], &data[..record.size_bytes()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        key_size_bytes_max: 1024,
        value_size_bytes_max: 1 << 20,
    };

    fn encoded(sequence: u64, key: &[u8], value: &[u8], tombstone: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, sequence, key, value, tombstone).unwrap();
        out
    }

    #[test]
    fn a_record_round_trips_with_its_flags_and_sequence() {
        let bytes = encoded(7, b"cart:42", b"three apples", false);
        let Decoded::Record(record) = decode(&bytes, BOUNDS) else {
            panic!("did not decode");
        };
        assert_eq!(record.key, b"cart:42");
        assert_eq!(record.value, b"three apples");
        assert_eq!(record.header.sequence, 7);
        assert!(!record.header.tombstone);
        assert_eq!(record.size_bytes(), bytes.len());

        let tombstone = encoded(8, b"cart:42", b"", true);
        assert!(matches!(decode(&tombstone, BOUNDS), Decoded::Record(r) if r.header.tombstone));
    }

    #[test]
    fn every_truncation_is_incomplete_or_invalid_never_a_record() {
        let bytes = encoded(99, b"key", &[5u8; 300], false);
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut], BOUNDS) {
                Decoded::Incomplete { needed } => assert!(needed > cut),
                Decoded::Invalid(_) => assert!(cut > 0, "an empty slice is incomplete"),
                Decoded::Record(_) => panic!("truncated at {cut} decoded as a record"),
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encoded(3, b"some key", b"some value", false);
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&damaged, BOUNDS), Decoded::Record(_)),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn lengths_over_the_bounds_are_refused_before_reading_further() {
        let bytes = encoded(1, &[1u8; 100], &[2u8; 100], false);
        let tight = Bounds {
            key_size_bytes_max: 99,
            value_size_bytes_max: 1 << 20,
        };
        assert_eq!(
            decode(&bytes[..HEADER_SIZE_BYTES], tight),
            Decoded::Invalid("key length over the bound")
        );
        let tight = Bounds {
            key_size_bytes_max: 1024,
            value_size_bytes_max: 99,
        };
        assert_eq!(
            decode(&bytes, tight),
            Decoded::Invalid("value length over the bound")
        );
    }

    #[test]
    fn zeroed_preallocated_space_is_invalid_at_once() {
        assert_eq!(decode(&[0u8; 64], BOUNDS), Decoded::Invalid("bad magic"));
        assert_eq!(decode(&[0u8; 1], BOUNDS), Decoded::Invalid("bad magic"));
    }

    #[test]
    fn the_fuzz_entry_point_accepts_valid_and_garbage_input() {
        fuzz_decode(&encoded(5, b"k", b"v", false));
        fuzz_decode(&[0x52, 0x6B, 1, 0, 255, 255, 0, 0]);
        fuzz_decode(&[]);
    }
}
