//! A streaming decoder of the nettrace format (version 4 and 5: .NET Core
//! 3.1 through .NET 8), as documented in microsoft/perfview
//! `src/TraceEvent/EventPipe/NetTraceFormat_v5.md`. Pure: bytes go in with
//! [`Decoder::feed`], decoded events come out of [`Decoder::next`] as soon
//! as the object holding them is complete, so a live EventPipe stream is
//! decoded while it arrives.
//!
//! The stream is the magic `Nettrace`, the FastSerialization header, a
//! `Trace` object, then `MetadataBlock`, `StackBlock`, `EventBlock` and
//! `SPBlock` objects, and a NullReference tag at the end. Metadata and
//! stacks are kept by the decoder; events refer to them by id. Dropped
//! events are counted from the per-thread sequence numbers and the
//! sequence points.
//!
//! No Rust crate reads nettrace; this is ours.

use std::collections::HashMap;

use super::bytes::{BytesError, Cursor};
use super::metadata::{self, EventMetadata, MetadataError};

const MAGIC: &[u8] = b"Nettrace";
const SERIALIZATION: &[u8] = b"!FastSerialization.1";
const TAG_NULL: u8 = 1;
const TAG_BEGIN: u8 = 5;
const TAG_END: u8 = 6;
/// The largest block accepted (the runtime writes blocks of 100 KiB or
/// less); a larger size is a corrupt stream, not a reason to buffer it.
/// With the decoder asked for events after each piece fed, what it
/// buffers is at most this plus one piece.
const MAX_BLOCK: usize = 8 << 20;

/// What a decoder keeps at most, whatever the stream (the runtime's
/// process is the app's: a fake runtime can send anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of event descriptions (metadata blobs): a real trace has a
    /// few hundred event types of a few hundred bytes each. Past it, the
    /// stream is corrupt.
    pub metadata_bytes: usize,
    /// Stack bytes between two sequence points: the runtime writes a
    /// sequence point every few MiB of events, and stacks never cross
    /// one. Past it, the stream is corrupt.
    pub stack_bytes: usize,
    /// Capture threads whose sequence numbers are tracked: past it the
    /// table starts again (drops are then not counted until each
    /// thread's next event), so distinct thread ids cannot grow it.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            metadata_bytes: 32 << 20,
            stack_bytes: 32 << 20,
            threads: 65_536,
        }
    }
}

/// What a corrupt or unsupported stream looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NettraceError {
    /// Not a nettrace stream.
    #[error("not a nettrace stream (no Nettrace/!FastSerialization.1 header)")]
    NotNettrace,
    /// A format version this decoder does not read.
    #[error(
        "nettrace {object} version {version} (needs reader {min}); this decoder reads versions 4 and 5"
    )]
    Version {
        /// The object's type name.
        object: String,
        /// Its version.
        version: u32,
        /// The oldest reader it allows.
        min: u32,
    },
    /// The stream ends inside a value, or a value is too long.
    #[error("corrupt nettrace stream: {0}")]
    Bytes(#[from] BytesError),
    /// An event description that cannot be read.
    #[error("corrupt nettrace stream at byte {offset}: event metadata: {source}")]
    Metadata {
        /// Where the metadata event starts.
        offset: u64,
        /// Why.
        #[source]
        source: MetadataError,
    },
    /// Bytes that break the format.
    #[error("corrupt nettrace stream at byte {offset}: {what}")]
    Corrupt {
        /// Offset from the start of the stream.
        offset: u64,
        /// What was wrong.
        what: String,
    },
}

/// The `Trace` object: facts about the whole trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceInfo {
    /// The timestamp clock's ticks per second.
    pub frequency: u64,
    /// The timestamp at the start of the trace.
    pub sync_time: u64,
    /// 4 or 8.
    pub pointer_size: u32,
    /// The traced process, in its own namespace.
    pub pid: u32,
    /// Processors of the machine.
    pub processors: u32,
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's description (provider, name, id, fields).
    pub metadata: std::sync::Arc<EventMetadata>,
    /// The thread the event describes.
    pub thread: u64,
    /// The timestamp, in the trace's ticks.
    pub timestamp: u64,
    /// The event's stack (instruction pointers, leaf first), if it has one.
    pub stack: Vec<u64>,
    /// The payload's bytes.
    pub payload: Vec<u8>,
}

/// An event blob's header, decoded.
#[derive(Debug, Clone, Copy, Default)]
struct BlobHeader {
    metadata_id: u32,
    sequence: u32,
    capture_thread: u64,
    processor: u32,
    thread: u64,
    stack_id: u32,
    timestamp: u64,
    payload_len: u32,
}

/// The decoder's state across objects.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    started: bool,
    ended: bool,
    trace: Option<TraceInfo>,
    metadata: HashMap<u32, std::sync::Arc<EventMetadata>>,
    metadata_bytes: usize,
    stacks: HashMap<u32, Vec<u64>>,
    stack_bytes: usize,
    /// The first error: the stream cannot be decoded past it, so what is
    /// fed afterwards is dropped, not buffered.
    failed: Option<NettraceError>,
    limits: Limits,
    /// Last sequence number seen per capture thread.
    sequences: HashMap<u64, u32>,
    ready: std::collections::VecDeque<Event>,
    dropped: u64,
    events: u64,
}

/// The `Trace` object's fields, after its type header; `None` until it
/// is all buffered.
fn trace_object(c: &mut Cursor<'_>) -> Result<Option<TraceInfo>, NettraceError> {
    const TRACE_LEN: usize = 16 + 8 + 8 + 4 + 4 + 4 + 4;
    if c.remaining() < TRACE_LEN + 1 {
        return Ok(None);
    }
    c.take(16)?; // SYSTEMTIME of sync_time
    let sync_time = c.u64()?;
    let frequency = c.u64()?;
    let pointer_size = c.u32()?;
    let pid = c.u32()?;
    let processors = c.u32()?;
    c.u32()?; // expected sampling rate
    if c.u8()? != TAG_END {
        return Err(c.corrupt("Trace object not closed"));
    }
    if frequency == 0 || !matches!(pointer_size, 4 | 8) {
        return Err(c.corrupt("Trace object with a zero clock or an odd pointer size"));
    }
    Ok(Some(TraceInfo {
        frequency,
        sync_time,
        pointer_size,
        pid,
        processors,
    }))
}

/// What nettrace adds to the shared byte cursor: errors at the cursor's
/// offset, and its 32-bit variable-length integers.
trait NettraceCursor {
    /// A corrupt-stream error at the cursor's offset.
    fn corrupt(&self, what: impl Into<String>) -> NettraceError;
    /// A variable-length integer that must fit 32 bits.
    fn varint32(&mut self) -> Result<u32, NettraceError>;
}

impl NettraceCursor for Cursor<'_> {
    fn corrupt(&self, what: impl Into<String>) -> NettraceError {
        NettraceError::Corrupt {
            offset: self.offset(),
            what: what.into(),
        }
    }

    fn varint32(&mut self) -> Result<u32, NettraceError> {
        let v = self.varint(5)?;
        u32::try_from(v).map_err(|_| self.corrupt("32-bit varint out of range"))
    }
}

/// An object's type, as its header names it.
struct TypeHeader {
    name: String,
    version: u32,
    min: u32,
}

/// Parses `5 1 version min len name 6` at the start of `c`.
fn type_header(c: &mut Cursor<'_>) -> Result<TypeHeader, NettraceError> {
    if c.u8()? != TAG_BEGIN || c.u8()? != TAG_NULL {
        return Err(c.corrupt("expected a type header"));
    }
    let version = c.u32()?;
    let min = c.u32()?;
    let len = c.u32()? as usize;
    if len > 64 {
        return Err(c.corrupt("type name too long"));
    }
    let name = String::from_utf8_lossy(c.take(len)?).into_owned();
    if c.u8()? != TAG_END {
        return Err(c.corrupt("type header not closed"));
    }
    Ok(TypeHeader { name, version, min })
}

/// Distance from `offset` to the next multiple of 4.
fn padding(offset: u64) -> usize {
    ((4 - offset % 4) % 4) as usize
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that keeps at most `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Appends bytes of the stream (dropped once the stream has failed to
    /// decode, or has ended: nothing would read them).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() && !self.ended {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The error the stream failed with, if it did.
    pub fn failed(&self) -> Option<&NettraceError> {
        self.failed.as_ref()
    }

    /// The `Trace` object, once read.
    pub fn trace(&self) -> Option<TraceInfo> {
        self.trace
    }

    /// Whether the end tag was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Events the runtime dropped, from sequence-number gaps.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events decoded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes fed but not yet decoded (an incomplete object).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next decoded event, `Ok(None)` when more bytes are needed (or
    /// the stream has ended). After an error, the same error again: the
    /// decoder drops its buffer and what is fed later.
    pub fn next_event(&mut self) -> Result<Option<Event>, NettraceError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if self.ended {
                return Ok(None);
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => {
                    self.buf = Vec::new();
                    self.metadata.clear();
                    self.stacks.clear();
                    self.sequences.clear();
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Decodes one object if it is complete; `false` if more bytes are
    /// needed.
    fn step(&mut self) -> Result<bool, NettraceError> {
        if !self.started {
            let header_len = MAGIC.len() + 4 + SERIALIZATION.len();
            if self.buf.len() < header_len {
                return Ok(false);
            }
            if &self.buf[..MAGIC.len()] != MAGIC
                || self.buf[MAGIC.len()..MAGIC.len() + 4]
                    != (SERIALIZATION.len() as u32).to_le_bytes()
                || &self.buf[MAGIC.len() + 4..header_len] != SERIALIZATION
            {
                return Err(NettraceError::NotNettrace);
            }
            self.consume(header_len);
            self.started = true;
        }
        let Some(&tag) = self.buf.first() else {
            return Ok(false);
        };
        if tag == TAG_NULL {
            self.consume(1);
            self.ended = true;
            return Ok(true);
        }
        // The whole object must be buffered: its size is known once the
        // type header and (for blocks) the block size are.
        let mut c = Cursor::at(&self.buf, self.base);
        if c.u8()? != TAG_BEGIN {
            return Err(c.corrupt(format!("expected an object, found tag {tag}")));
        }
        // Type headers are at most 5 + 1 + 12 + 64 bytes.
        let ty = match type_header(&mut c) {
            Ok(ty) => ty,
            Err(_) if self.buf.len() < 90 => return Ok(false),
            Err(e) => return Err(e),
        };
        let newest = if ty.name == "Trace" { 5 } else { 2 };
        if ty.min > newest {
            return Err(NettraceError::Version {
                object: ty.name,
                version: ty.version,
                min: ty.min,
            });
        }
        if ty.name == "Trace" {
            let Some(trace) = trace_object(&mut c)? else {
                return Ok(false);
            };
            self.trace = Some(trace);
            let used = c.position();
            self.consume(used);
            return Ok(true);
        }
        if c.remaining() < 4 {
            return Ok(false);
        }
        let size = c.u32()? as usize;
        if size > MAX_BLOCK {
            return Err(c.corrupt(format!("block of {size} bytes")));
        }
        let pad = padding(self.base + c.position() as u64);
        if c.remaining() < pad + size + 1 {
            return Ok(false);
        }
        c.take(pad)?;
        let start = c.position();
        c.take(size)?;
        if c.u8()? != TAG_END {
            return Err(c.corrupt(format!("{} not closed", ty.name)));
        }
        let used = c.position();
        let block_base = self.base + start as u64;
        let block = self.buf[start..start + size].to_vec();
        self.consume(used);
        match ty.name.as_str() {
            "EventBlock" | "MetadataBlock" => {
                self.blobs(&block, block_base, ty.name == "MetadataBlock")?
            }
            "StackBlock" => self.stack_block(&block, block_base)?,
            "SPBlock" => self.sequence_point(&block, block_base)?,
            // Unknown objects are skipped: the format is extensible.
            _ => {}
        }
        Ok(true)
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.base += n as u64;
    }

    fn blobs(&mut self, block: &[u8], base: u64, is_metadata: bool) -> Result<(), NettraceError> {
        let mut c = Cursor::at(block, base);
        let header_len = usize::from(c.u16()?);
        if header_len < 4 {
            return Err(c.corrupt("block header shorter than its fields"));
        }
        let flags = c.u16()?;
        c.take(header_len - 4)?;
        let compressed = flags & 1 != 0;
        let mut prev = BlobHeader::default();
        while c.remaining() > 0 {
            let h = if compressed {
                compressed_header(&mut c, &prev)?
            } else {
                uncompressed_header(&mut c)?
            };
            let payload = c.take(h.payload_len as usize)?;
            if !compressed {
                let pad = padding(base + c.position() as u64);
                c.take(pad.min(c.remaining()))?;
            }
            if is_metadata {
                let m = metadata::parse(payload).map_err(|source| NettraceError::Metadata {
                    offset: c.offset(),
                    source,
                })?;
                self.metadata_bytes += payload.len();
                if self.metadata_bytes > self.limits.metadata_bytes {
                    return Err(c.corrupt(format!(
                        "over {} bytes of event descriptions",
                        self.limits.metadata_bytes
                    )));
                }
                self.metadata.insert(m.metadata_id, std::sync::Arc::new(m));
            } else {
                self.event(&h, payload, &c)?;
            }
            prev = h;
        }
        Ok(())
    }

    fn event(
        &mut self,
        h: &BlobHeader,
        payload: &[u8],
        c: &Cursor<'_>,
    ) -> Result<(), NettraceError> {
        if h.metadata_id != 0 {
            if let Some(&last) = self.sequences.get(&h.capture_thread) {
                let gap = h.sequence.wrapping_sub(last).wrapping_sub(1);
                // A reset to 1 is a new thread with a reused id.
                if h.sequence != 1 && gap < u32::MAX / 2 {
                    self.dropped += u64::from(gap);
                }
            }
            if self.sequences.len() >= self.limits.threads
                && !self.sequences.contains_key(&h.capture_thread)
            {
                self.sequences.clear();
            }
            self.sequences.insert(h.capture_thread, h.sequence);
        }
        let Some(metadata) = self.metadata.get(&h.metadata_id).cloned() else {
            return Err(c.corrupt(format!(
                "event refers to unknown metadata {}",
                h.metadata_id
            )));
        };
        let stack = if h.stack_id == 0 {
            Vec::new()
        } else {
            self.stacks.get(&h.stack_id).cloned().unwrap_or_default()
        };
        self.events += 1;
        self.ready.push_back(Event {
            metadata,
            thread: h.thread,
            timestamp: h.timestamp,
            stack,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    fn stack_block(&mut self, block: &[u8], base: u64) -> Result<(), NettraceError> {
        let mut c = Cursor::at(block, base);
        let first = c.u32()?;
        let count = c.u32()?;
        let width = match self.trace.map_or(8, |t| t.pointer_size) {
            4 => 4,
            _ => 8,
        };
        for i in 0..count {
            let len = c.u32()? as usize;
            let bytes = c.take(len)?;
            self.stack_bytes += len;
            if self.stack_bytes > self.limits.stack_bytes {
                return Err(c.corrupt(format!(
                    "over {} bytes of stacks without a sequence point",
                    self.limits.stack_bytes
                )));
            }
            let ips = bytes
                .chunks_exact(width)
                .map(|b| {
                    if width == 4 {
                        u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    } else {
                        u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
                    }
                })
                .collect();
            self.stacks.insert(first.wrapping_add(i), ips);
        }
        Ok(())
    }

    fn sequence_point(&mut self, block: &[u8], base: u64) -> Result<(), NettraceError> {
        let mut c = Cursor::at(block, base);
        c.u64()?; // timestamp
        let threads = c.u32()?;
        for _ in 0..threads {
            let thread = c.u64()?;
            let sequence = c.u32()?;
            let last = self.sequences.get(&thread).copied().unwrap_or(0);
            let gap = sequence.wrapping_sub(last);
            if gap != 0 && gap < u32::MAX / 2 {
                self.dropped += u64::from(gap);
            }
            if self.sequences.len() >= self.limits.threads && !self.sequences.contains_key(&thread)
            {
                self.sequences.clear();
            }
            self.sequences.insert(thread, sequence);
        }
        // Stacks never cross a sequence point.
        self.stacks.clear();
        self.stack_bytes = 0;
        Ok(())
    }
}

fn compressed_header(c: &mut Cursor<'_>, prev: &BlobHeader) -> Result<BlobHeader, NettraceError> {
    let flags = c.u8()?;
    let mut h = *prev;
    if flags & 1 != 0 {
        h.metadata_id = c.varint32()?;
    }
    if flags & 2 != 0 {
        h.sequence = prev.sequence.wrapping_add(c.varint32()?);
        h.capture_thread = c.varint(10)?;
        h.processor = c.varint32()?;
    }
    if h.metadata_id != 0 {
        h.sequence = h.sequence.wrapping_add(1);
    }
    if flags & 4 != 0 {
        h.thread = c.varint(10)?;
    }
    if flags & 8 != 0 {
        h.stack_id = c.varint32()?;
    }
    h.timestamp = prev.timestamp.wrapping_add(c.varint(10)?);
    if flags & 16 != 0 {
        c.take(16)?;
    }
    if flags & 32 != 0 {
        c.take(16)?;
    }
    if flags & 128 != 0 {
        h.payload_len = c.varint32()?;
    }
    let _ = h.processor;
    Ok(h)
}

fn uncompressed_header(c: &mut Cursor<'_>) -> Result<BlobHeader, NettraceError> {
    let _size = c.u32()?;
    let metadata_id = c.u32()? & 0x7fff_ffff;
    let sequence = c.u32()?;
    let thread = c.u64()?;
    let capture_thread = c.u64()?;
    let processor = c.u32()?;
    let stack_id = c.u32()?;
    let timestamp = c.u64()?;
    c.take(32)?; // activity ids
    let payload_len = c.u32()?;
    Ok(BlobHeader {
        metadata_id,
        sequence,
        capture_thread,
        processor,
        thread,
        stack_id,
        timestamp,
        payload_len,
    })
}

#[cfg(test)]
mod tests;
