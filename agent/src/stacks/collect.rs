//! Collecting stacks while the targets run: for each process its
//! symbolizer (maps, perf map, DWARF unwinder, .NET method table), the raw
//! stacks seen with their counts and weights, and, at the end, the named
//! and merged [`Stack`]s. CPU profiles feed it samples; probes feed it the
//! stacks their BPF programs recorded. Addresses are named while the
//! processes still exist ([`Collector::symbolize_pending`]).

use std::collections::{BTreeMap, HashMap};

use super::aggregate::{NamedStack, aggregate};
use super::kallsyms::Kallsyms;
use super::symbolize::{ProcessSymbols, lookup_addresses};
use super::unwind::Unwound;
use super::{Frame, FrameKind, Stack, Unwind};
use crate::procfs::Procfs;
use crate::sys::MAX_STACK_FRAMES;

/// Where in a function a user stack was recorded: what its first frames
/// mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Anywhere in a function body (a CPU sample): the frame-pointer chain
    /// is right as the kernel walks it.
    Body,
    /// On a function's first instruction or on a `ret`: the function has
    /// no frame (yet, or any more), its return address is at `[sp]`, and
    /// the frame-pointer register still holds the caller's frame, so a
    /// plain frame-pointer walk would skip the caller.
    Frameless,
    /// Just after a function returned (a uretprobe): the IP is the return
    /// address in the caller.
    AfterReturn,
}

/// One recorded user stack, as the kernel or a BPF program gave it.
#[derive(Debug, Clone, Copy)]
pub struct UserStack<'a> {
    /// Where it was recorded.
    pub site: Site,
    /// The frame-pointer chain: the IP, then return addresses.
    pub chain: &'a [u64],
    /// BP, SP, IP, for DWARF unwinding (with `stack`).
    pub regs: Option<[u64; 3]>,
    /// A copy of the user stack from SP up.
    pub stack: &'a [u8],
    /// The word at SP (the return address at a [`Site::Frameless`] site).
    pub top: Option<u64>,
    /// The function that just returned, at a [`Site::AfterReturn`] site
    /// (an address in it): the stack's leaf, which the walk from the
    /// caller cannot see.
    pub leaf: Option<u64>,
}

/// Which walk gave a user stack: DWARF for `dwarf`; for `auto`, the DWARF
/// walk when it completed, otherwise whichever walk got further (frame
/// pointers get through JIT code that has no unwind info).
pub fn choose_user_stack(
    mode: Unwind,
    dwarf: Option<Unwound>,
    frame_pointer: Vec<u64>,
) -> Vec<u64> {
    match (mode, dwarf) {
        (Unwind::Fp, _) => frame_pointer,
        (Unwind::Dwarf, Some(d)) => d.frames,
        (Unwind::Dwarf, None) => frame_pointer.into_iter().take(1).collect(),
        (Unwind::Auto, Some(d)) if !d.incomplete || d.frames.len() >= frame_pointer.len() => {
            d.frames
        }
        (Unwind::Auto, _) => frame_pointer,
    }
}

/// The frame-pointer walk of `stack` in lookup addresses (innermost
/// first: the IP as is, return addresses minus one), corrected for its
/// site: at a frameless site the caller (the return address at `[sp]`) is
/// put back in; after a return the IP itself is a return address.
pub fn frame_pointer_walk(stack: &UserStack<'_>) -> Vec<u64> {
    let mut out: Vec<u64> = lookup_addresses(stack.chain).collect();
    match stack.site {
        Site::Body => {}
        Site::Frameless => {
            if let (Some(top), Some(_)) = (stack.top, out.first()) {
                out.insert(1, top.saturating_sub(1));
            }
        }
        Site::AfterReturn => {
            if let Some(ip) = out.first_mut() {
                *ip = ip.saturating_sub(1);
            }
        }
    }
    out
}

/// Everything known about one recorded process.
struct ProcessState {
    comm: String,
    symbols: ProcessSymbols,
    threads: HashMap<u32, String>,
    /// For a runtime that names its own code: the session naming its
    /// methods.
    methods: Option<crate::runtime::MethodsDuring>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RawStack {
    pid: u32,
    tid: u32,
    /// Lookup addresses, innermost first.
    user: Vec<u64>,
    kernel: Vec<u64>,
    /// What the leaf frame says of the thread (wall and off-CPU profiles).
    reason: Option<Reason>,
}

/// Why a stack's thread was where it was, in wall and off-CPU profiles:
/// the frame appended as its leaf ([`reason_frame`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Running: a CPU sample (`[on-cpu]`).
    OnCpu,
    /// Blocked; `kernel` is the kernel stack at the switch (lookup
    /// addresses, innermost first), from which the blocking function is
    /// named, and `state` the state letter it left in.
    Blocked {
        /// The kernel stack, innermost first.
        kernel: Vec<u64>,
        /// `S`, `D` or `R`.
        state: char,
    },
    /// Blocked in a kernel function already named (`/proc/…/wchan` of a
    /// thread blocked when the capture began).
    In {
        /// The function, if the kernel said.
        function: Option<String>,
        /// `S` or `D`.
        state: char,
    },
}

/// The leaf frame of a [`Reason`]: `[on-cpu]`, the kernel function the
/// thread blocked in, or, where kernel symbols are not readable, the
/// state (`[sleeping]`, `[uninterruptible]`, `[preempted]`).
pub fn reason_frame(kallsyms: &Kallsyms, reason: &Reason) -> Frame {
    let marker = |name: &str| Frame::new(name.to_owned(), FrameKind::Marker, None);
    let by_state = |state: char| {
        marker(match state {
            'S' => "[sleeping]",
            'D' => "[uninterruptible]",
            _ => "[preempted]",
        })
    };
    let function = match reason {
        Reason::OnCpu => return marker("[on-cpu]"),
        Reason::Blocked { state: 'R', .. } | Reason::In { state: 'R', .. } => {
            return by_state('R');
        }
        Reason::Blocked { kernel, .. } => {
            super::kallsyms::blocking_function(kernel.iter().filter_map(|ip| kallsyms.lookup(*ip)))
                .map(str::to_owned)
        }
        Reason::In { function, .. } => function.clone(),
    };
    match (function, reason) {
        (Some(name), _) => Frame::new(name, FrameKind::Kernel, None),
        (None, Reason::Blocked { state, .. } | Reason::In { state, .. }) => by_state(*state),
        (None, Reason::OnCpu) => marker("[on-cpu]"),
    }
}

/// What a collection ends with.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Named, merged stacks, heaviest first.
    pub stacks: Vec<Stack>,
    /// PID → process name, for every process recorded.
    pub processes: BTreeMap<u32, String>,
    /// GNU build IDs of the modules in the stacks, by PID and module.
    pub build_ids: BTreeMap<(u32, String), String>,
    /// Symbolization errors by PID and module (the first of each).
    pub symbol_errors: BTreeMap<(u32, String), String>,
}

/// Stacks of the processes being recorded, and how to name them.
pub struct Collector {
    procfs: Procfs,
    unwind: Unwind,
    per_thread: bool,
    /// Start a .NET rundown for each .NET process (names at the end).
    rundown: bool,
    kallsyms: std::sync::Arc<Kallsyms>,
    procs: HashMap<u32, ProcessState>,
    raw: HashMap<RawStack, (u64, u64)>,
    samples: u64,
    /// Frames of the distinct stacks held: what the named stacks and
    /// their rendering will hold.
    frames: u64,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("processes", &self.procs.len())
            .field("stacks", &self.raw.len())
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector that walks user stacks as `unwind` says, keeps threads
    /// apart with `per_thread`, and, with `rundown`, names the managed
    /// frames of .NET processes with the runtime's rundown at the end.
    pub fn new(procfs: &Procfs, unwind: Unwind, per_thread: bool, rundown: bool) -> Self {
        Self {
            procfs: procfs.clone(),
            unwind,
            per_thread,
            rundown,
            kallsyms: std::sync::Arc::default(),
            procs: HashMap::new(),
            raw: HashMap::new(),
            samples: 0,
            frames: 0,
        }
    }

    /// Names kernel frames with this table (read while recording).
    pub fn set_kallsyms(&mut self, kallsyms: std::sync::Arc<Kallsyms>) {
        self.kallsyms = kallsyms;
    }

    fn state(&mut self, pid: u32) -> &mut ProcessState {
        state_of(&mut self.procs, &self.procfs, self.rundown, pid)
    }

    /// Names managed code of `pid` with this method table from now on
    /// (probes follow the runtime's method loads and hand them in).
    pub fn set_managed(&mut self, pid: u32, table: crate::runtime::Methods) {
        self.state(pid).symbols.set_managed(table);
    }

    /// Names `addr` in `pid` `name` (the function a probe is on).
    pub fn name_address(&mut self, pid: u32, addr: u64, name: &str, module: Option<String>) {
        self.state(pid).symbols.name_address(addr, name, module);
    }

    /// The user stack of one recording, in lookup addresses (innermost
    /// first), walked as the collector's unwind mode says; its addresses
    /// are queued for naming.
    pub fn user_stack(&mut self, pid: u32, stack: &UserStack<'_>) -> Vec<u64> {
        self.user_stack_as(self.unwind, pid, stack)
    }

    /// [`Self::user_stack`] walked as `unwind` says rather than as the
    /// collection does (a stack read from `/proc` has no frame-pointer
    /// chain).
    pub fn user_stack_as(&mut self, unwind: Unwind, pid: u32, stack: &UserStack<'_>) -> Vec<u64> {
        let procfs = &self.procfs;
        let state = state_of(&mut self.procs, procfs, self.rundown, pid);
        let frame_pointer = frame_pointer_walk(stack);
        let mut user = if unwind == Unwind::Fp {
            frame_pointer
        } else {
            let dwarf = stack
                .regs
                .and_then(|regs| dwarf_walk(&mut state.symbols, procfs, pid, stack, regs))
                .map(|walk| cut_at_trampoline(&state.symbols, walk));
            choose_user_stack(unwind, dwarf, frame_pointer)
        };
        if let Some(leaf) = stack.leaf {
            user.insert(0, leaf);
        }
        for ip in &user {
            state.symbols.note(*ip);
        }
        user
    }

    /// Counts one stack of `pid` (thread `tid`), weighing `weight`.
    /// `user` comes from [`Self::user_stack`]; `kernel` is the kernel's
    /// chain, innermost first.
    pub fn add(&mut self, pid: u32, tid: u32, user: Vec<u64>, kernel: &[u64], weight: u64) {
        self.add_with_reason(pid, tid, user, kernel, weight, None);
    }

    /// [`Self::add`], with a [`Reason`] as the leaf frame.
    pub fn add_with_reason(
        &mut self,
        pid: u32,
        tid: u32,
        user: Vec<u64>,
        kernel: &[u64],
        weight: u64,
        reason: Option<Reason>,
    ) {
        let per_thread = self.per_thread;
        let procfs = &self.procfs;
        let state = state_of(&mut self.procs, procfs, self.rundown, pid);
        if per_thread {
            state.threads.entry(tid).or_insert_with(|| {
                procfs
                    .thread_comm(pid, tid)
                    .unwrap_or_else(|_| format!("tid-{tid}"))
            });
        }
        let raw = RawStack {
            pid,
            tid: if per_thread { tid } else { 0 },
            user,
            kernel: lookup_addresses(kernel).collect(),
            reason,
        };
        if !self.raw.contains_key(&raw) {
            // Roots, user and kernel frames, and the reason's leaf.
            self.frames += 1
                + u64::from(per_thread)
                + (raw.user.len() + raw.kernel.len()) as u64
                + u64::from(raw.reason.is_some());
        }
        let entry = self.raw.entry(raw).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(weight);
        self.samples += 1;
    }

    /// Stacks counted so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Distinct stacks held so far.
    pub fn distinct_stacks(&self) -> usize {
        self.raw.len()
    }

    /// Frames of the distinct stacks held so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Names the addresses queued since the last call, while the
    /// processes still exist.
    pub fn symbolize_pending(&mut self) {
        for (pid, state) in &mut self.procs {
            state.symbols.symbolize_pending(&self.procfs, *pid);
        }
    }

    /// The frames of `user` (from [`Self::user_stack`]) for `pid`,
    /// innermost first, naming what is still queued first.
    pub fn name_now(&mut self, pid: u32, user: &[u64]) -> Vec<Frame> {
        let state = state_of(&mut self.procs, &self.procfs, self.rundown, pid);
        state.symbols.symbolize_pending(&self.procfs, pid);
        user.iter().map(|ip| state.symbols.frame(*ip)).collect()
    }

    /// Ends the collection: finishes the .NET rundowns, names every
    /// stack, merges them, and reads the build IDs of the modules in them.
    pub fn finish(mut self) -> Collected {
        self.symbolize_pending();
        self.name_runtime_methods();
        let Self {
            procfs,
            per_thread,
            kallsyms,
            procs,
            raw,
            ..
        } = self;
        let mut frames = Frames {
            procs: &procs,
            kallsyms: &kallsyms,
            per_thread,
            roots_of: HashMap::new(),
            user_frames: HashMap::new(),
            kernel_frames: HashMap::new(),
            leaves: std::collections::HashSet::new(),
        };
        let named = raw
            .into_iter()
            .filter_map(|(stack, (count, weight))| frames.name(&stack, count, weight));
        let stacks = aggregate(named, usize::from(MAX_STACK_FRAMES));
        // Build IDs for pprof, read now, while the processes exist.
        let mut build_ids = BTreeMap::new();
        for stack in &stacks {
            for module in stack.frames.iter().filter_map(|f| f.module.as_deref()) {
                build_ids
                    .entry((stack.pid, module.to_owned()))
                    .or_insert_with(|| build_id(&procfs, stack.pid, module));
            }
        }
        Collected {
            stacks,
            processes: procs
                .iter()
                .map(|(pid, s)| (*pid, s.comm.clone()))
                .collect(),
            build_ids: build_ids
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
            symbol_errors: procs
                .iter()
                .flat_map(|(pid, s)| {
                    s.symbols
                        .errors()
                        .iter()
                        .map(|(module, e)| ((*pid, module.clone()), e.clone()))
                })
                .collect(),
        }
    }

    /// Ends the runtimes' method sessions: their names win over perf maps
    /// and ELF symbols from now on.
    fn name_runtime_methods(&mut self) {
        for (pid, state) in &mut self.procs {
            if let Some(methods) = state.methods.take() {
                match methods.finish() {
                    Ok(table) => {
                        tracing::debug!(
                            pid,
                            methods = table.len(),
                            "managed methods named by the runtime"
                        );
                        state.symbols.set_managed(table);
                    }
                    Err(e) => state.symbols.note_error("[runtime methods]", e.to_string()),
                }
            }
        }
    }
}

/// Names the raw stacks' addresses. Each distinct frame is made once and
/// shared by the stacks that hold it: the named stacks hold a pointer per
/// frame.
struct Frames<'a> {
    procs: &'a HashMap<u32, ProcessState>,
    kallsyms: &'a Kallsyms,
    per_thread: bool,
    roots_of: HashMap<(u32, Option<u32>), Frame>,
    user_frames: HashMap<(u32, u64), Frame>,
    kernel_frames: HashMap<u64, Frame>,
    /// Leaves are interned by what they say: many blocks, few names.
    leaves: std::collections::HashSet<Frame>,
}

impl Frames<'_> {
    /// `stack` with its frames named; `None` for a process never seen.
    fn name(&mut self, stack: &RawStack, count: u64, weight: u64) -> Option<NamedStack> {
        let state = self.procs.get(&stack.pid)?;
        let mut roots = vec![
            self.roots_of
                .entry((stack.pid, None))
                .or_insert_with(|| Frame::new(state.comm.clone(), FrameKind::Root, None))
                .clone(),
        ];
        if self.per_thread {
            roots.push(
                self.roots_of
                    .entry((stack.pid, Some(stack.tid)))
                    .or_insert_with(|| {
                        let name = state.threads.get(&stack.tid).cloned();
                        Frame::new(name.unwrap_or_default(), FrameKind::Root, None)
                    })
                    .clone(),
            );
        }
        let user = stack
            .user
            .iter()
            .rev()
            .map(|ip| {
                self.user_frames
                    .entry((stack.pid, *ip))
                    .or_insert_with(|| state.symbols.frame(*ip))
                    .clone()
            })
            .collect();
        let kallsyms = self.kallsyms;
        let mut kernel: Vec<Frame> = stack
            .kernel
            .iter()
            .rev()
            .map(|ip| {
                self.kernel_frames
                    .entry(*ip)
                    .or_insert_with(|| kernel_frame(kallsyms, *ip))
                    .clone()
            })
            .collect();
        if let Some(r) = &stack.reason {
            let leaf = reason_frame(kallsyms, r);
            kernel.push(match self.leaves.get(&leaf) {
                Some(shared) => shared.clone(),
                None => {
                    self.leaves.insert(leaf.clone());
                    leaf
                }
            });
        }
        Some(NamedStack {
            pid: stack.pid,
            roots,
            user,
            kernel,
            user_depth: stack.user.len(),
            count,
            weight,
        })
    }
}

/// What is known of `pid`, made on first sight (with a .NET rundown when
/// `rundown` asks and the process is .NET). A free function, so that
/// callers can lend `procfs` alongside it.
fn state_of<'a>(
    procs: &'a mut HashMap<u32, ProcessState>,
    procfs: &Procfs,
    rundown: bool,
    pid: u32,
) -> &'a mut ProcessState {
    procs.entry(pid).or_insert_with(|| {
        let symbols = ProcessSymbols::new(procfs, pid);
        let methods = rundown
            .then(|| {
                // Only a capture that names managed code asks which
                // runtime it is (a single-file app's ELF file is read).
                let runtime = crate::runtime::of_process(procfs, pid, symbols.maps());
                crate::runtime::MethodsDuring::start(runtime, procfs, pid)
            })
            .flatten();
        ProcessState {
            comm: procfs
                .stat(pid)
                .map_or_else(|_| format!("pid-{pid}"), |s| s.comm),
            symbols,
            threads: HashMap::new(),
            methods,
        }
    })
}

/// A kernel frame named from kallsyms.
pub fn kernel_frame(kallsyms: &Kallsyms, ip: u64) -> Frame {
    Frame::new(
        kallsyms
            .lookup(ip)
            .map_or_else(|| format!("[unknown] [kernel]+0x{ip:x}"), str::to_owned),
        FrameKind::Kernel,
        None,
    )
}

/// A DWARF walk up to the first uretprobe trampoline: past it, the stack
/// holds the trampoline's address instead of a return address (the
/// kernel's frame-pointer walk puts the real ones back; a stack copy
/// cannot), so the rest of the walk is guesswork and is dropped.
fn cut_at_trampoline(symbols: &ProcessSymbols, mut walk: Unwound) -> Unwound {
    if let Some(at) = walk
        .frames
        .iter()
        .position(|a| symbols.is_uretprobe_trampoline(a.saturating_add(1)))
    {
        walk.frames.truncate(at);
        walk.incomplete = true;
    }
    walk
}

/// The DWARF walk of one recording, in lookup addresses. At a frameless
/// site the first step (pop the return address) is taken here, so that
/// JIT code without unwind info is walked right too.
fn dwarf_walk(
    symbols: &mut ProcessSymbols,
    procfs: &Procfs,
    pid: u32,
    stack: &UserStack<'_>,
    [bp, sp, ip]: [u64; 3],
) -> Option<Unwound> {
    match stack.site {
        Site::Body => symbols.unwind(procfs, pid, &[bp, sp, ip], stack.stack),
        Site::Frameless => {
            let top = stack.top?;
            let rest = symbols.unwind(
                procfs,
                pid,
                &[bp, sp + 8, top],
                stack.stack.get(8..).unwrap_or_default(),
            )?;
            let mut frames = vec![ip];
            frames.extend(
                rest.frames
                    .iter()
                    .enumerate()
                    // The popped return address is looked up in its call.
                    .map(|(i, a)| if i == 0 { a.saturating_sub(1) } else { *a }),
            );
            Some(Unwound {
                frames,
                incomplete: rest.incomplete,
            })
        }
        Site::AfterReturn => {
            let mut walked = symbols.unwind(procfs, pid, &[bp, sp, ip], stack.stack)?;
            if let Some(first) = walked.frames.first_mut() {
                *first = first.saturating_sub(1);
            }
            Some(walked)
        }
    }
}

/// The GNU build ID of a module the process maps, read as the process
/// sees it.
fn build_id(procfs: &Procfs, pid: u32, module: &str) -> Option<String> {
    let seen = procfs
        .open_seen(pid, module, crate::rootfs::Follow::InRoot)
        .ok()?
        .file(crate::rootfs::limits::BINARY_BYTES)
        .ok()?;
    let id = crate::elf::Elf::open(&seen).ok()?.build_id()?;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_wait_or_the_state() {
        let kallsyms = Kallsyms::parse(
            "ffff0100 T __schedule\nffff0200 T schedule\nffff0300 T futex_wait_queue\nffff0400 T do_syscall_64\n",
        );
        let blocked = |kernel: Vec<u64>, state| Reason::Blocked { kernel, state };
        let name = |r: &Reason| {
            let f = reason_frame(&kallsyms, r);
            (f.name.clone(), f.kind)
        };
        assert_eq!(
            name(&blocked(
                vec![0xffff_0110, 0xffff_0210, 0xffff_0310, 0xffff_0410],
                'S'
            )),
            ("futex_wait_queue".to_owned(), FrameKind::Kernel)
        );
        // Kernel symbols unreadable: the state says what it can.
        let none = Kallsyms::default();
        assert_eq!(
            reason_frame(&none, &blocked(vec![0xffff_0110], 'D')).name,
            "[uninterruptible]"
        );
        assert_eq!(
            name(&blocked(vec![0xffff_0110], 'R')),
            ("[preempted]".to_owned(), FrameKind::Marker)
        );
        assert_eq!(
            name(&Reason::OnCpu),
            ("[on-cpu]".to_owned(), FrameKind::Marker)
        );
        let wchan = Reason::In {
            function: Some("pipe_read".into()),
            state: 'S',
        };
        assert_eq!(name(&wchan), ("pipe_read".to_owned(), FrameKind::Kernel));
    }

    #[test]
    fn frameless_sites_put_the_caller_back() {
        // At a function's entry the chain is [ip, caller's caller, …]: the
        // caller is only at [sp].
        let chain = [0x1000, 0x3005, 0x4005];
        let at_entry = UserStack {
            site: Site::Frameless,
            chain: &chain,
            regs: None,
            stack: &[],
            top: Some(0x2005),
            leaf: None,
        };
        assert_eq!(
            frame_pointer_walk(&at_entry),
            vec![0x1000, 0x2004, 0x3004, 0x4004]
        );
        let in_body = UserStack {
            site: Site::Body,
            ..at_entry
        };
        assert_eq!(frame_pointer_walk(&in_body), vec![0x1000, 0x3004, 0x4004]);
        let after_return = UserStack {
            site: Site::AfterReturn,
            chain: &[0x2005, 0x3005],
            ..at_entry
        };
        assert_eq!(frame_pointer_walk(&after_return), vec![0x2004, 0x3004]);
    }

    #[test]
    fn auto_takes_the_walk_that_got_further() {
        let fp = vec![1, 2, 3];
        let complete = Unwound {
            frames: vec![1, 2],
            incomplete: false,
        };
        let cut = Unwound {
            frames: vec![1, 2],
            incomplete: true,
        };
        assert_eq!(
            choose_user_stack(Unwind::Auto, Some(complete.clone()), fp.clone()),
            vec![1, 2]
        );
        assert_eq!(
            choose_user_stack(Unwind::Auto, Some(cut.clone()), fp.clone()),
            fp
        );
        assert_eq!(
            choose_user_stack(Unwind::Dwarf, Some(cut), fp.clone()),
            vec![1, 2]
        );
        assert_eq!(choose_user_stack(Unwind::Dwarf, None, fp.clone()), vec![1]);
        assert_eq!(
            choose_user_stack(Unwind::Fp, Some(complete), fp.clone()),
            fp
        );
    }
}
