//! The byte ranges of a file that were read: what `object` parses
//! instead of a mapped or wholly read file ([`super`]).

use std::ops::Range;

use object::ReadRef;

/// The byte ranges of a file that were read, as `object` reads a file:
/// reads inside them succeed, all others fail.
#[derive(Debug, Default)]
pub struct Sparse {
    len: u64,
    regions: Vec<(u64, Vec<u8>)>,
}

impl Sparse {
    /// An image of a file of `len` bytes with nothing read yet.
    pub fn new(len: u64) -> Self {
        Self {
            len,
            regions: Vec::new(),
        }
    }

    /// The whole of `bytes` (an image already in memory, such as the
    /// vDSO).
    pub fn whole(bytes: Vec<u8>) -> Self {
        Self {
            len: bytes.len() as u64,
            regions: vec![(0, bytes)],
        }
    }

    /// The file's length.
    pub(super) fn file_len(&self) -> u64 {
        self.len
    }

    /// Keeps `bytes`, read at `offset`.
    pub(super) fn add(&mut self, offset: u64, bytes: Vec<u8>) {
        self.regions.push((offset, bytes));
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.regions.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// The longest run of bytes read from `offset` on.
    fn region(&self, offset: u64) -> Option<&[u8]> {
        self.regions
            .iter()
            .filter_map(|(start, bytes)| {
                let skip = usize::try_from(offset.checked_sub(*start)?).ok()?;
                bytes.get(skip..)
            })
            .max_by_key(|b| b.len())
    }

    /// Whether `range` was read already.
    pub(super) fn has(&self, range: &Range<u64>) -> bool {
        self.region(range.start)
            .is_some_and(|b| b.len() as u64 >= range.end - range.start)
    }
}

impl<'a> ReadRef<'a> for &'a Sparse {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        let size = usize::try_from(size).map_err(|_| ())?;
        self.region(offset).and_then(|b| b.get(..size)).ok_or(())
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        let bytes = self.region(range.start).ok_or(())?;
        let most = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let bytes = &bytes[..bytes.len().min(most)];
        let end = bytes.iter().position(|b| *b == delimiter).ok_or(())?;
        Ok(&bytes[..end])
    }
}
