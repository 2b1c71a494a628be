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

/// A sorted kernel symbol table. The names are one string, each symbol
/// an address and a range of it (16 bytes a symbol, where a `String`
/// each took about 60): the table of a current kernel's ~200,000 text
/// symbols holds about 7 MiB instead of 14.
#[derive(Debug, Default)]
pub struct Kallsyms {
    names: String,
    /// Address, start of the name in `names`, its length.
    symbols: Vec<(u64, u32, u32)>,
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
        let (Ok(start), Ok(len)) = (u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return;
        };
        if addr != 0 && matches!(kind, "t" | "T") {
            self.names.push_str(name);
            self.symbols.push((addr, start, len));
        }
    }

    fn finish(mut self) -> Self {
        self.symbols.sort_unstable_by_key(|(a, _, _)| *a);
        self.symbols.shrink_to_fit();
        self.names.shrink_to_fit();
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
        let i = self.symbols.partition_point(|(a, _, _)| *a <= addr);
        let &(_, start, len) = self.symbols.get(i.checked_sub(1)?)?;
        self.names
            .get(start as usize..start as usize + len as usize)
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
