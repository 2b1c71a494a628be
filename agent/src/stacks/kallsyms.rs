//! Kernel symbols from `/proc/kallsyms`.

/// Whether `/proc/kallsyms` shows real addresses. Reads only its start:
/// the whole file is megabytes.
pub fn readable() -> bool {
    use std::io::Read as _;
    let mut head = vec![0u8; 4096];
    let Ok(n) = std::fs::File::open("/proc/kallsyms").and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    String::from_utf8_lossy(&head[..n]).lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|a| !a.trim_start_matches('0').is_empty())
    })
}

/// A sorted kernel symbol table, 8 bytes a symbol and its name once: each
/// symbol is its address's low 32 bits (kernel text, modules included,
/// lies in one 4 GiB range on x86-64 and arm64; a symbol outside the first
/// one's range is left out) and where its name starts in `names`, where
/// each name ends with a newline. Since Linux 6.2 nearly half of the
/// text symbols are `__pfx_NAME`, the padding in front of NAME (call
/// thunks may run there): it takes NAME's name, stored once. A current
/// kernel's ~120,000 text symbols hold about 2.5 MiB (16 bytes a symbol
/// and every name took 4.9; a `String` each, 14).
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// The names, each followed by `\n`.
    names: String,
    /// `low 32 bits of the address << 32 | start of the name`, sorted.
    symbols: Vec<u64>,
    /// The high 32 bits every kept address has (of the first symbol).
    high: Option<u32>,
    /// A `__pfx_NAME` just read: where NAME was put, for NAME to use.
    padding: Option<(usize, usize)>,
}

impl Kallsyms {
    /// Parses `/proc/kallsyms` text: `ADDR TYPE NAME [MODULE]`. Only text
    /// symbols (`t`/`T`) are kept; zeroed addresses (hidden by
    /// `kptr_restrict`) give an empty table.
    pub fn parse(text: &str) -> Self {
        let mut table = Self::default();
        for line in text.lines() {
            table.add_line(line);
        }
        table.finish()
    }

    fn add_line(&mut self, line: &str) {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if addr == 0 || !matches!(kind, "t" | "T") {
            return;
        }
        let high = (addr >> 32) as u32;
        if *self.high.get_or_insert(high) != high {
            return;
        }
        let padding = self.padding.take();
        let (name, is_padding) = match name.strip_prefix("__pfx_") {
            Some(function) => (function, true),
            None => (name, false),
        };
        let start = match padding {
            // The function right after its padding: the name is there.
            Some((start, len))
                if !is_padding && self.names.get(start..start + len) == Some(name) =>
            {
                start
            }
            _ => {
                let start = self.names.len();
                self.names.push_str(name);
                self.names.push('\n');
                start
            }
        };
        if is_padding {
            self.padding = Some((start, name.len()));
        }
        let Ok(start) = u32::try_from(start) else {
            return;
        };
        self.symbols
            .push((addr & 0xffff_ffff) << 32 | u64::from(start));
    }

    fn finish(mut self) -> Self {
        // By address, then by name's start: a function and its padding
        // never share an address.
        self.symbols.sort_unstable();
        self.padding = None;
        self
    }

    /// Reads `/proc/kallsyms` line by line (the file is megabytes: it is
    /// never held whole).
    pub fn load() -> Self {
        use std::io::BufRead as _;
        let Ok(file) = std::fs::File::open("/proc/kallsyms") else {
            return Self::default();
        };
        let mut table = Self::default();
        let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            table.add_line(&line);
            line.clear();
        }
        table.finish()
    }

    /// The table of this kernel, shared: while one capture or continuous
    /// profiling holds it, the next capture takes it rather than reading
    /// `/proc/kallsyms` again, as long as the kernel's modules are the
    /// same (`/proc/modules`' names and addresses). Nobody holding it, it
    /// is freed.
    pub fn shared() -> std::sync::Arc<Self> {
        use std::sync::{Arc, Mutex, Weak};
        static SHARED: Mutex<(Weak<Kallsyms>, String)> = Mutex::new((Weak::new(), String::new()));
        let modules = modules_fingerprint();
        let mut shared = crate::sync::lock(&SHARED);
        if shared.1 == modules
            && let Some(table) = shared.0.upgrade()
        {
            return table;
        }
        let table = Arc::new(Self::load());
        *shared = (Arc::downgrade(&table), modules);
        table
    }

    /// The symbol at or before `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        if Some((addr >> 32) as u32) != self.high {
            return None;
        }
        let low = addr & 0xffff_ffff;
        let i = self.symbols.partition_point(|s| s >> 32 <= low);
        let entry = self.symbols.get(i.checked_sub(1)?)?;
        let rest = self.names.get((entry & 0xffff_ffff) as usize..)?;
        rest.split('\n').next()
    }

    /// Whether any symbol is known.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

/// The loaded modules' names and addresses (`/proc/modules` without the
/// use counts, which change as they are used): kallsyms changes with them.
fn modules_fingerprint() -> String {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} {}\n",
                fields.first().copied().unwrap_or_default(),
                fields.get(5).copied().unwrap_or_default()
            )
        })
        .collect()
}

/// Scheduler functions every blocked stack passes through on its way to
/// the switch: not the reason.
fn is_scheduler(name: &str) -> bool {
    name == "schedule"
        || name.starts_with("__schedule")
        || name.starts_with("schedule_")
        || name.starts_with("preempt_schedule")
        || name.starts_with("__cond_resched")
        || name.starts_with("_cond_resched")
        || name.starts_with("__traceiter_")
        || name.starts_with("perf_")
        || name.starts_with("__perf_")
}

/// The kernel function a thread blocked in: the innermost frame of its
/// kernel stack (`names`, innermost first) that is not the scheduler
/// itself (`futex_wait_queue`, `do_nanosleep`, `pipe_read`,
/// `do_epoll_wait`, `io_schedule`, …).
pub fn blocking_function<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .find(|n| !is_scheduler(n) && !n.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_wait_not_the_scheduler() {
        assert_eq!(
            blocking_function([
                "__schedule",
                "schedule",
                "futex_wait_queue",
                "__futex_wait",
                "futex_wait"
            ]),
            Some("futex_wait_queue")
        );
        assert_eq!(
            blocking_function([
                "__schedule",
                "schedule",
                "schedule_hrtimeout_range_clock",
                "do_nanosleep"
            ]),
            Some("do_nanosleep")
        );
        assert_eq!(
            blocking_function(["__schedule", "schedule", "io_schedule", "folio_wait_bit"]),
            Some("io_schedule")
        );
        assert_eq!(blocking_function(["__schedule", "schedule"]), None);
    }

    #[test]
    fn lookup_finds_the_enclosing_symbol() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t do_one\nffffffff81000200 D data_x\nffffffffc0000000 t mod_fn\t[ext4]\n",
        );
        assert_eq!(k.lookup(0xffff_ffff_8100_0150), Some("do_one"));
        assert_eq!(k.lookup(0xffff_ffff_8100_0000), Some("_stext"));
        assert_eq!(k.lookup(0xffff_ffff_c000_0010), Some("mod_fn"));
        assert_eq!(k.lookup(0x10), None);
    }

    #[test]
    fn padding_takes_its_functions_name_stored_once() {
        let k = Kallsyms::parse(
            "ffffffff81000ff0 T __pfx_do_one\nffffffff81001000 T do_one\n\
             ffffffff81001100 t __pfx_lonely\nffffffff81001110 t other\n\
             ffffffff81001200 t __pfx_other\n",
        );
        assert_eq!(k.lookup(0xffff_ffff_8100_0ff8), Some("do_one"));
        assert_eq!(k.lookup(0xffff_ffff_8100_1008), Some("do_one"));
        assert_eq!(k.lookup(0xffff_ffff_8100_1104), Some("lonely"));
        assert_eq!(k.lookup(0xffff_ffff_8100_1118), Some("other"));
        assert_eq!(k.lookup(0xffff_ffff_8100_1208), Some("other"));
        assert_eq!(k.names, "do_one\nlonely\nother\nother\n");
        // Another 4 GiB range than the first symbol's: left out, and
        // nothing there is named.
        let k = Kallsyms::parse("ffffffff81000000 T a\nfffffffe81000000 T b\n");
        assert_eq!(k.lookup(0xffff_fffe_8100_0010), None);
        assert_eq!(k.lookup(0xffff_ffff_8100_0010), Some("a"));
    }

    #[test]
    fn this_kernels_table_names_its_own_functions() {
        if !readable() {
            return;
        }
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let k = Kallsyms::load();
        // Every text symbol's name by address: aliases share one, and any
        // of them is right.
        let mut names: std::collections::HashMap<u64, Vec<&str>> = Default::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if let (Some(addr), Some("t" | "T"), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            {
                let name = name.strip_prefix("__pfx_").unwrap_or(name);
                names
                    .entry(u64::from_str_radix(addr, 16).unwrap())
                    .or_default()
                    .push(name);
            }
        }
        let mut checked = 0;
        for (addr, aliases) in &names {
            let got = k.lookup(*addr).unwrap();
            assert!(
                aliases.contains(&got),
                "{addr:x}: {got}, not one of {aliases:?}"
            );
            checked += 1;
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn the_table_is_read_once_while_it_is_held() {
        let held = Kallsyms::shared();
        let again = Kallsyms::shared();
        assert!(std::sync::Arc::ptr_eq(&held, &again));
    }

    #[test]
    fn hidden_addresses_give_an_empty_table() {
        assert!(Kallsyms::parse("0000000000000000 T _stext\n").is_empty());
    }
}
