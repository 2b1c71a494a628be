//! `/v1/dotnet/gcdump`: what a .NET process's GC heap holds, by type
//! (count and bytes), like `dotnet-gcdump report`, from outside the
//! process.
//!
//! One EventPipe session enables the runtime's heap-snapshot keywords (GC,
//! GCHeapCollect, GCHeapDump, GCHeapAndTypeNames and Type: what
//! dotnet-gcdump enables). Enabling GCHeapCollect makes the runtime run a
//! full, blocking GC at once and walk the heap during it: each live object
//! comes in a `GCBulkNode` event (address, size, type id), each type in a
//! `GCBulkType` event (id and name). The walk is done when the GC that
//! began it (`GCStart` of a generation-2, non-background GC) ends; the
//! session is then stopped and read to its end, since events of the GC's
//! threads come in per-thread buffers. [`Walk`] (pure) adds objects up by
//! type; bulk node events are numbered, and a gap in their numbers (a
//! buffer the runtime dropped) makes the answer incomplete rather than
//! silently short.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tracecar_api::dotnet::{HeapReport, HeapType};

use super::bytes::Cursor;
use super::ipc::{Command, ProviderConfig};
use super::metadata::RUNTIME;
use super::nettrace::Decoder;
use super::port::{Port, PortError};
use super::session::{self, Flow};
use super::spec::GcdumpSpec;
use crate::procfs::Procfs;

/// GC (0x1), GCHeapDump (0x100000), GCHeapCollect (0x800000),
/// GCHeapAndTypeNames (0x1000000), Type (0x80000).
const KEYWORDS: u64 = 0x1 | 0x10_0000 | 0x80_0000 | 0x100_0000 | 0x8_0000;

const GC_START: u32 = 1;
const GC_END: u32 = 2;
const BULK_TYPE: u32 = 15;
const BULK_NODE: u32 = 18;

/// `GCStart`'s `Type` of a background GC, which does not walk the heap.
const BACKGROUND_GC: u32 = 1;

/// Types held apart at most; the objects of any more are added to one
/// entry, [`OTHER_TYPES`]. The app decides how many types its runtime
/// reports.
pub const MAX_TYPES: usize = 100_000;

/// The entry of types past [`MAX_TYPES`].
pub const OTHER_TYPES: &str = "[other types]";

/// Type names kept at most (the same bound as the types themselves).
const MAX_NAME_BYTES: usize = 1024;

/// Processes whose type names are remembered between walks.
const REMEMBERED_PROCESSES: usize = 8;

/// Type names of recent walks, by process (pid and start time): the .NET
/// Core 3.1 runtime sends each type's `GCBulkType` once per process, not
/// once per session, so a second walk of a 3.1 process gets no names but
/// for types new since the first. Bounded: [`REMEMBERED_PROCESSES`]
/// processes (the oldest forgotten first), [`MAX_TYPES`] names each.
static REMEMBERED: std::sync::Mutex<Vec<Remembered>> = std::sync::Mutex::new(Vec::new());

/// One process (pid, start time) and its types' names.
type Remembered = ((u32, u64), HashMap<u64, String>);

/// Fills the names `walk` lacks from what earlier walks of the same
/// process were told, and remembers what this one was told.
fn remember_names(process: (u32, u64), walk: &mut Walk) {
    let Ok(mut remembered) = REMEMBERED.lock() else {
        return;
    };
    let at = match remembered.iter().position(|(p, _)| *p == process) {
        Some(at) => at,
        None => {
            if remembered.len() >= REMEMBERED_PROCESSES {
                remembered.remove(0);
            }
            remembered.push((process, HashMap::new()));
            remembered.len() - 1
        }
    };
    let known = &mut remembered[at].1;
    for (id, name) in &walk.names {
        if known.len() < MAX_TYPES || known.contains_key(id) {
            known.insert(*id, name.clone());
        }
    }
    for id in walk.by_type.keys() {
        if !walk.names.contains_key(id)
            && let Some(name) = known.get(id)
        {
            walk.names.insert(*id, name.clone());
        }
    }
}

/// One object in a `GCBulkNode` event: address, size, type id, edge count.
const NODE_BYTES: usize = 32;

/// The heap walk, from the session's events.
#[derive(Debug, Default)]
pub struct Walk {
    /// The number of the GC that walks the heap, once it started.
    gc: Option<u32>,
    /// Whether that GC ended.
    ended: bool,
    /// Type id → (objects, bytes).
    by_type: HashMap<u64, (u64, u64)>,
    /// Objects of types past [`MAX_TYPES`].
    other: (u64, u64),
    /// Type id → name.
    names: HashMap<u64, String>,
    /// The bulk node events' numbers seen.
    indexes: Vec<u32>,
    /// Events whose payload could not be read.
    malformed: u64,
}

impl Walk {
    /// Takes one event of the session's provider.
    pub fn event(&mut self, id: u32, payload: &[u8]) {
        let read = match id {
            GC_START => self.gc_start(payload),
            GC_END => self.gc_end(payload),
            BULK_TYPE => self.bulk_type(payload),
            BULK_NODE => self.bulk_node(payload),
            _ => Ok(()),
        };
        if read.is_err() {
            self.malformed += 1;
        }
    }

    fn gc_start(&mut self, payload: &[u8]) -> Result<(), super::bytes::BytesError> {
        let mut c = Cursor::new(payload);
        let (count, depth, _reason, kind) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
        if self.gc.is_none() && depth == 2 && kind != BACKGROUND_GC {
            self.gc = Some(count);
        }
        Ok(())
    }

    fn gc_end(&mut self, payload: &[u8]) -> Result<(), super::bytes::BytesError> {
        let count = Cursor::new(payload).u32()?;
        if self.gc == Some(count) {
            self.ended = true;
        }
        Ok(())
    }

    fn bulk_type(&mut self, payload: &[u8]) -> Result<(), super::bytes::BytesError> {
        let mut c = Cursor::new(payload);
        let count = c.u32()?;
        let _clr = c.u16()?;
        for _ in 0..count {
            let id = c.u64()?;
            let _module = c.u64()?;
            let _name_id = c.u32()?;
            let _flags = c.u32()?;
            let _element = c.u8()?;
            let mut name = c.utf16z()?;
            let parameters = c.u32()?;
            c.take(
                usize::try_from(parameters)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(8),
            )?;
            if self.names.len() < MAX_TYPES || self.names.contains_key(&id) {
                if name.len() > MAX_NAME_BYTES {
                    let mut end = MAX_NAME_BYTES;
                    while !name.is_char_boundary(end) {
                        end -= 1;
                    }
                    name.truncate(end);
                    name.push('…');
                }
                self.names.insert(id, name);
            }
        }
        Ok(())
    }

    fn bulk_node(&mut self, payload: &[u8]) -> Result<(), super::bytes::BytesError> {
        let mut c = Cursor::new(payload);
        let index = c.u32()?;
        let count = c.u32()?;
        let _clr = c.u16()?;
        // The whole event is read before any of it is counted.
        let nodes = c.take(
            usize::try_from(count)
                .unwrap_or(usize::MAX)
                .saturating_mul(NODE_BYTES),
        )?;
        self.indexes.push(index);
        for node in nodes.chunks_exact(NODE_BYTES) {
            let mut n = Cursor::new(node);
            let (_address, size, id) = (n.u64()?, n.u64()?, n.u64()?);
            let full = self.by_type.len() >= MAX_TYPES;
            let entry = match self.by_type.get_mut(&id) {
                Some(entry) => entry,
                None if full => &mut self.other,
                None => self.by_type.entry(id).or_default(),
            };
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(size);
        }
        Ok(())
    }

    /// Whether the GC that walks the heap has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Objects counted so far.
    pub fn objects(&self) -> u64 {
        self.by_type.values().map(|e| e.0).sum::<u64>() + self.other.0
    }

    /// Bulk node events missing from the numbered sequence the runtime
    /// sent (0, 1, 2, …).
    pub fn missing_events(&self) -> u64 {
        let mut seen = self.indexes.clone();
        seen.sort_unstable();
        seen.dedup();
        seen.last()
            .map_or(0, |last| u64::from(*last) + 1 - seen.len() as u64)
    }

    /// The objects by type, most bytes first (then by name).
    pub fn types(&self) -> Vec<HeapType> {
        let mut types: Vec<HeapType> = self
            .by_type
            .iter()
            .map(|(id, (count, bytes))| HeapType {
                name: self
                    .names
                    .get(id)
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .unwrap_or_else(|| format!("[type {id:#x}]")),
                count: *count,
                bytes: *bytes,
            })
            .collect();
        if self.other.0 > 0 {
            types.push(HeapType {
                name: OTHER_TYPES.to_string(),
                count: self.other.0,
                bytes: self.other.1,
            });
        }
        // Distinct types can share a name (one per module, generic
        // instances the runtime names alike): one entry each.
        let mut merged: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for t in types {
            let entry = merged.entry(t.name).or_default();
            entry.0 += t.count;
            entry.1 = entry.1.saturating_add(t.bytes);
        }
        let mut types: Vec<HeapType> = merged
            .into_iter()
            .map(|(name, (count, bytes))| HeapType { name, count, bytes })
            .collect();
        types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        types
    }
}

/// Why a heap walk has no answer.
#[derive(Debug, thiserror::Error)]
pub enum GcdumpError {
    /// The session could not start.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The walk did not end in time, or the stream ended before it did.
    #[error(
        "pid {pid}'s heap walk did not finish in {waited_s:.1} s ({objects} objects so far; {why})"
    )]
    Unfinished {
        /// The process.
        pid: u32,
        /// How long the agent waited.
        waited_s: f64,
        /// Objects counted.
        objects: u64,
        /// How the session ended.
        why: String,
    },
}

fn command() -> Command {
    Command::CollectTracing {
        // A heap of millions of objects comes in at once.
        buffer_mb: 256,
        rundown: false,
        providers: vec![ProviderConfig {
            name: RUNTIME.to_string(),
            keywords: KEYWORDS,
            level: 5,
            filter: None,
        }],
    }
}

/// Walks `spec.pid`'s heap: starts the session (which makes the runtime
/// run the GC), waits for the walk to end (at most `spec.seconds`), and
/// adds it up. `started` is told once the session runs.
pub fn collect(
    procfs: &Procfs,
    port: &Port,
    spec: &GcdumpSpec,
    cancel: &AtomicBool,
) -> Result<HeapReport, GcdumpError> {
    let mut decoder = Decoder::new();
    let mut walk = Walk::default();
    let mut failed = None;
    let started = Instant::now();
    let ended = session::run(
        procfs,
        port,
        &command(),
        session::Window::seconds(Duration::from_secs(u64::from(spec.seconds))),
        cancel,
        |result| {
            if let Err(e) = result {
                failed = Some(e);
            }
        },
        |bytes| {
            decoder.feed(bytes);
            loop {
                match decoder.next_event() {
                    Ok(Some(event)) if event.metadata.provider == RUNTIME => {
                        walk.event(event.metadata.event_id, &event.payload);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return Flow::Failed,
                }
            }
            // Stopped now, the session is still read to its end.
            if walk.ended() {
                Flow::Limit
            } else {
                Flow::Continue
            }
        },
    );
    if let Some(e) = failed {
        return Err(e.into());
    }
    let ended = ended.ok_or_else(|| GcdumpError::Unfinished {
        pid: spec.pid,
        waited_s: started.elapsed().as_secs_f64(),
        objects: walk.objects(),
        why: "the session did not start".to_string(),
    })?;
    if !walk.ended() {
        let why = match decoder.failed() {
            Some(e) => format!("the stream could not be decoded: {e}"),
            None => ended
                .error
                .map_or(ended.why.clone(), |e| format!("{}: {e}", ended.why)),
        };
        return Err(GcdumpError::Unfinished {
            pid: spec.pid,
            waited_s: ended.seconds,
            objects: walk.objects(),
            why,
        });
    }
    if let Ok(stat) = procfs.stat(spec.pid) {
        remember_names((spec.pid, stat.start_time), &mut walk);
    }
    let types = walk.types();
    let missing = walk.missing_events();
    Ok(HeapReport {
        pid: spec.pid,
        gc: walk.gc.unwrap_or_default(),
        objects: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().map(|t| t.bytes).sum(),
        types,
        complete: missing == 0 && decoder.dropped() == 0 && walk.malformed == 0,
        missing_events: missing,
        dropped: decoder.dropped(),
        seconds: ended.seconds,
    })
}

/// The report as `dotnet-gcdump report` prints it: bytes, count and type,
/// most bytes first, under a line with the totals.
pub fn table(report: &HeapReport) -> String {
    let mut out = format!(
        "# pid {}: {} objects, {} bytes, {} types (GC #{}{})\n{:>16} {:>12}  type\n",
        report.pid,
        thousands(report.objects),
        thousands(report.bytes),
        report.types.len(),
        report.gc,
        if report.complete {
            ""
        } else {
            "; incomplete: the runtime dropped events of the walk"
        },
        "bytes",
        "count",
    );
    for t in &report.types {
        out.push_str(&format!(
            "{:>16} {:>12}  {}\n",
            thousands(t.bytes),
            thousands(t.count),
            t.name
        ));
    }
    out
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16z(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    fn bulk_type(types: &[(u64, &str)]) -> Vec<u8> {
        let mut out = (types.len() as u32).to_le_bytes().to_vec();
        out.extend(9u16.to_le_bytes());
        for (id, name) in types {
            out.extend(id.to_le_bytes());
            out.extend(0x7000u64.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.push(0x12);
            out.extend(utf16z(name));
            // One type parameter.
            out.extend(1u32.to_le_bytes());
            out.extend(0x5555u64.to_le_bytes());
        }
        out
    }

    fn bulk_node(index: u32, nodes: &[(u64, u64)]) -> Vec<u8> {
        let mut out = index.to_le_bytes().to_vec();
        out.extend((nodes.len() as u32).to_le_bytes());
        out.extend(9u16.to_le_bytes());
        for (i, (size, id)) in nodes.iter().enumerate() {
            out.extend((0x1000 + i as u64 * 64).to_le_bytes());
            out.extend(size.to_le_bytes());
            out.extend(id.to_le_bytes());
            out.extend(0u64.to_le_bytes());
        }
        out
    }

    fn gc(id: u32, count: u32, depth: u32, kind: u32) -> (u32, Vec<u8>) {
        let mut out = count.to_le_bytes().to_vec();
        out.extend(depth.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(9u16.to_le_bytes());
        (id, out)
    }

    #[test]
    fn objects_add_up_by_type_until_the_walking_gc_ends() {
        let mut walk = Walk::default();
        // A background GC does not walk; the gen-2 blocking one does.
        for (id, payload) in [gc(GC_START, 6, 2, BACKGROUND_GC), gc(GC_START, 7, 2, 0)] {
            walk.event(id, &payload);
        }
        walk.event(
            BULK_NODE,
            &bulk_node(0, &[(32, 0xa), (32, 0xa), (8024, 0xb)]),
        );
        walk.event(
            BULK_TYPE,
            &bulk_type(&[(0xa, "App.Held"), (0xb, "App.Held[]")]),
        );
        walk.event(BULK_NODE, &bulk_node(1, &[(32, 0xa), (24, 0xc)]));
        let (id, end) = gc(GC_END, 6, 2, 0);
        walk.event(id, &end[..10]);
        assert!(!walk.ended(), "another GC's end");
        let (id, end) = gc(GC_END, 7, 2, 0);
        walk.event(id, &end[..10]);
        assert!(walk.ended());
        assert_eq!(walk.objects(), 5);
        assert_eq!(walk.missing_events(), 0);
        let types = walk.types();
        let names: Vec<(&str, u64, u64)> = types
            .iter()
            .map(|t| (t.name.as_str(), t.count, t.bytes))
            .collect();
        assert_eq!(
            names,
            [
                ("App.Held[]", 1, 8024),
                ("App.Held", 3, 96),
                ("[type 0xc]", 1, 24)
            ]
        );
    }

    #[test]
    fn a_gap_in_the_bulk_events_is_counted_and_bad_payloads_are_not_read() {
        let mut walk = Walk::default();
        walk.event(BULK_NODE, &bulk_node(0, &[(32, 0xa)]));
        walk.event(BULK_NODE, &bulk_node(3, &[(32, 0xa)]));
        assert_eq!(walk.missing_events(), 2);
        // A count larger than the payload: nothing of it is counted.
        let mut lying = bulk_node(4, &[(32, 0xa)]);
        lying[4..8].copy_from_slice(&1000u32.to_le_bytes());
        walk.event(BULK_NODE, &lying);
        walk.event(BULK_TYPE, &[1, 0, 0]);
        assert_eq!(walk.malformed, 2);
        assert_eq!(walk.objects(), 2);
    }

    #[test]
    fn names_of_an_earlier_walk_of_the_same_process_fill_in() {
        let mut first = Walk::default();
        first.event(BULK_TYPE, &bulk_type(&[(0xa, "App.Held")]));
        first.event(BULK_NODE, &bulk_node(0, &[(32, 0xa)]));
        remember_names((4_000_001, 77), &mut first);
        let mut second = Walk::default();
        second.event(BULK_NODE, &bulk_node(0, &[(32, 0xa)]));
        remember_names((4_000_001, 77), &mut second);
        assert_eq!(second.types()[0].name, "App.Held");
        // Another process with that pid: not its names.
        let mut other = Walk::default();
        other.event(BULK_NODE, &bulk_node(0, &[(32, 0xa)]));
        remember_names((4_000_001, 78), &mut other);
        assert_eq!(other.types()[0].name, "[type 0xa]");
    }

    #[test]
    fn types_past_the_bound_share_one_entry() {
        let mut walk = Walk::default();
        let nodes: Vec<(u64, u64)> = (0..MAX_TYPES as u64 + 3).map(|id| (16, id)).collect();
        walk.event(BULK_NODE, &bulk_node(0, &nodes));
        let types = walk.types();
        assert_eq!(types.len(), MAX_TYPES + 1);
        let other = types.iter().find(|t| t.name == OTHER_TYPES).unwrap();
        assert_eq!((other.count, other.bytes), (3, 48));
    }

    #[test]
    fn the_table_reads_like_dotnet_gcdump_report() {
        let report = tracecar_api::fixtures::heap_report(7);
        assert_eq!(
            table(&report),
            "# pid 7: 1,001 objects, 40,024 bytes, 2 types (GC #3)\n\
             \x20          bytes        count  type\n\
             \x20         32,000        1,000  App.Held\n\
             \x20          8,024            1  App.Held[]\n"
        );
    }
}
