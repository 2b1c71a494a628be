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

/// A sorted kernel symbol table.
#[derive(Debug, Default)]
pub struct Kallsyms {
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Parses `/proc/kallsyms` text: `ADDR TYPE NAME [MODULE]`. Only text
    /// symbols (`t`/`T`) are kept; zeroed addresses (hidden by
    /// `kptr_restrict`) give an empty table.
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_owned()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(a, _)| *a);
        Self { symbols }
    }

    /// Reads `/proc/kallsyms`.
    pub fn load() -> Self {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// The symbol at or before `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        i.checked_sub(1).map(|i| self.symbols[i].1.as_str())
    }

    /// Whether any symbol is known.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
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
    fn hidden_addresses_give_an_empty_table() {
        assert!(Kallsyms::parse("0000000000000000 T _stext\n").is_empty());
    }
}
