//! The one little-endian reader of the runtime's wire formats: IPC
//! answers ([`super::ipc`]), event metadata ([`super::metadata`]) and
//! nettrace blocks ([`super::nettrace`]). Every read is checked against
//! what is left, and an error says where it happened, counted from the
//! start of the stream the bytes came from.

/// A read past the end, or a value the format does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    /// Fewer bytes left than the value needs.
    #[error("{wanted} bytes expected at byte {offset}, {left} left")]
    Short {
        /// Where the read started.
        offset: u64,
        /// Bytes the value needs.
        wanted: usize,
        /// Bytes there were.
        left: usize,
    },
    /// A NUL-terminated UTF-16 string without its NUL.
    #[error("string not terminated at byte {offset}")]
    Unterminated {
        /// Where the string started.
        offset: u64,
    },
    /// A variable-length integer longer than its type allows.
    #[error("variable-length integer too long at byte {offset}")]
    VarintTooLong {
        /// Where it started.
        offset: u64,
    },
    /// A length whose byte count does not fit in memory's addresses.
    #[error("a length of {units} UTF-16 units at byte {offset} overflows")]
    Overflow {
        /// Where the length was.
        offset: u64,
        /// The length read.
        units: u32,
    },
}

/// A position in a byte slice.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    /// Reads `bytes` from their start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self::at(bytes, 0)
    }

    /// Reads `bytes`, which start `base` bytes into their stream (for the
    /// offsets errors give).
    pub fn at(bytes: &'a [u8], base: u64) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    /// The stream offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], BytesError> {
        if self.remaining() < n {
            return Err(BytesError::Short {
                offset: self.offset(),
                wanted: n,
                left: self.remaining(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BytesError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, BytesError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, BytesError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, BytesError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, BytesError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A variable-length integer of at most `max_bytes` bytes (7 bits
    /// each, low first).
    pub fn varint(&mut self, max_bytes: u32) -> Result<u64, BytesError> {
        let offset = self.offset();
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BytesError::VarintTooLong { offset })
    }

    /// A NUL-terminated UTF-16 string (event metadata's names).
    pub fn utf16z(&mut self) -> Result<String, BytesError> {
        let offset = self.offset();
        let mut units = Vec::new();
        loop {
            match self.u16() {
                Ok(0) => break,
                Ok(u) => units.push(u),
                Err(_) => return Err(BytesError::Unterminated { offset }),
            }
        }
        Ok(String::from_utf16_lossy(&units))
    }

    /// A UTF-16 string preceded by its length in units, the NUL counted
    /// (the IPC protocol's strings); what follows a NUL is dropped.
    pub fn utf16_counted(&mut self) -> Result<String, BytesError> {
        let offset = self.offset();
        let units = self.u32()?;
        let bytes = usize::try_from(units)
            .ok()
            .and_then(|u| u.checked_mul(2))
            .ok_or(BytesError::Overflow { offset, units })?;
        let wide: Vec<u16> = self
            .take(bytes)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Ok(String::from_utf16_lossy(&wide))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_says_where_it_ran_out() {
        let mut c = Cursor::at(&[1, 2, 0, 3, 0, 0, 0, 9], 100);
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u16(), Ok(2));
        assert_eq!(c.u32(), Ok(3));
        assert_eq!(c.offset(), 107);
        assert_eq!(
            c.u64(),
            Err(BytesError::Short {
                offset: 107,
                wanted: 8,
                left: 1
            })
        );
        // A failed read takes nothing.
        assert_eq!(c.u8(), Ok(9));
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn varints_and_strings() {
        assert_eq!(Cursor::new(&[0xac, 0x02]).varint(5), Ok(300));
        assert_eq!(
            Cursor::new(&[0x80; 6]).varint(5),
            Err(BytesError::VarintTooLong { offset: 0 })
        );
        let hi: Vec<u8> = [b'h', 0, b'i', 0, 0, 0].into();
        assert_eq!(Cursor::new(&hi).utf16z(), Ok("hi".to_owned()));
        assert_eq!(
            Cursor::new(&hi[..4]).utf16z(),
            Err(BytesError::Unterminated { offset: 0 })
        );
        let mut counted = 3u32.to_le_bytes().to_vec();
        counted.extend(&hi);
        assert_eq!(Cursor::new(&counted).utf16_counted(), Ok("hi".to_owned()));
        let huge = u32::MAX.to_le_bytes();
        assert!(Cursor::new(&huge).utf16_counted().is_err());
    }
}
