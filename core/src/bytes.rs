//! Fixed-width little-endian encoding helpers shared by every codec in the core (version
//! sets, context tokens, peer frames).
//!
//! Decoding never panics and never trusts a length: [`Reader`] checks each read against
//! what is left, and callers check every count against its bound *before* allocating.

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended early; `needed` more bytes would let the read go on.
    Incomplete { needed: usize },
    /// The input can never be valid (a reason in words).
    Invalid(&'static str),
}

/// A cursor over a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The next `length` bytes.
    pub fn slice(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        if length > self.remaining() {
            return Err(DecodeError::Incomplete {
                needed: length - self.remaining(),
            });
        }
        let slice = &self.bytes[self.position..self.position + length];
        self.position += length;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.slice(N)?);
        Ok(array)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32` length that must not exceed `max` (checked before anything is read or
    /// allocated with it).
    pub fn length_u32(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let length = self.u32()? as usize;
        if length > max {
            return Err(DecodeError::Invalid(what));
        }
        Ok(length)
    }

    /// A `u16` count that must not exceed `max`.
    pub fn count_u16(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let count = usize::from(self.u16()?);
        if count > max {
            return Err(DecodeError::Invalid(what));
        }
        Ok(count)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::Invalid(what))
        }
    }
}

/// Appends little-endian fixed-width integers.
pub trait PutBytes {
    fn put_u8(&mut self, value: u8);
    fn put_u16(&mut self, value: u16);
    fn put_u32(&mut self, value: u32);
    fn put_u64(&mut self, value: u64);
}

impl PutBytes for Vec<u8> {
    fn put_u8(&mut self, value: u8) {
        self.push(value);
    }
    fn put_u16(&mut self, value: u16) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_u32(&mut self, value: u32) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_u64(&mut self, value: u64) {
        self.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_little_endian() {
        let mut out = Vec::new();
        out.put_u8(1);
        out.put_u16(0x0203);
        out.put_u32(0x0405_0607);
        out.put_u64(0x0809_0A0B_0C0D_0E0F);
        assert_eq!(out[1..3], [0x03, 0x02]);
        let mut reader = Reader::new(&out);
        assert_eq!(reader.u8(), Ok(1));
        assert_eq!(reader.u16(), Ok(0x0203));
        assert_eq!(reader.u32(), Ok(0x0405_0607));
        assert_eq!(reader.u64(), Ok(0x0809_0A0B_0C0D_0E0F));
        assert_eq!(reader.finish("trailing"), Ok(()));
    }

    #[test]
    fn short_input_is_incomplete_and_says_how_much_is_missing() {
        let mut reader = Reader::new(&[1, 2, 3]);
        assert_eq!(reader.u64(), Err(DecodeError::Incomplete { needed: 5 }));
        assert_eq!(reader.position(), 0, "a failed read consumes nothing");
        assert_eq!(reader.slice(4), Err(DecodeError::Incomplete { needed: 1 }));
    }

    #[test]
    fn lengths_and_counts_over_their_bound_are_invalid_before_use() {
        let mut out = Vec::new();
        out.put_u32(1 << 30);
        out.put_u16(9);
        let mut reader = Reader::new(&out);
        assert_eq!(
            reader.length_u32(1 << 20, "too long"),
            Err(DecodeError::Invalid("too long"))
        );
        assert_eq!(
            reader.count_u16(8, "too many"),
            Err(DecodeError::Invalid("too many"))
        );
    }
}
