//! Pure aggregation of named stacks: one [`Stack`] per distinct
//! `(pid, frames)`, its count summed, marked truncated when the user part
//! does not reach an entry point, heaviest first.

use std::collections::HashMap;

use super::{Frame, Stack};

/// Entry points where a complete user stack ends.
const STACK_ROOTS: [&str; 11] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "__libc_start_main_impl",
    "main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "thread_start",
];

/// One sampled stack with its frames named.
#[derive(Debug, Clone)]
pub struct NamedStack {
    /// The process.
    pub pid: u32,
    /// Root frames ([`FrameKind::Root`]): the process name, then the
    /// thread name with `threads=true`.
    pub roots: Vec<Frame>,
    /// User frames, outermost first.
    pub user: Vec<Frame>,
    /// Kernel frames, outermost first.
    pub kernel: Vec<Frame>,
    /// Frames the unwinder returned (the user part may be cut at
    /// `max_depth`).
    pub user_depth: usize,
    /// Samples (or probe hits) with this stack.
    pub count: u64,
    /// What they weigh together.
    pub weight: u64,
}

/// Merges `stacks`; a user part of `max_depth` frames or more counts as
/// truncated, as does one that does not start at an entry point.
pub fn aggregate(stacks: impl IntoIterator<Item = NamedStack>, max_depth: usize) -> Vec<Stack> {
    let mut merged: HashMap<(u32, Vec<Frame>), (bool, u64, u64)> = HashMap::new();
    for stack in stacks {
        let reaches_root = stack
            .user
            .iter()
            .take(3)
            .any(|f| STACK_ROOTS.contains(&f.name.as_str()));
        let truncated = stack.user_depth > 0 && (!reaches_root || stack.user_depth >= max_depth);
        let frames: Vec<Frame> = stack
            .roots
            .into_iter()
            .chain(stack.user)
            .chain(stack.kernel)
            .collect();
        let entry = merged
            .entry((stack.pid, frames))
            .or_insert((truncated, 0, 0));
        entry.1 += stack.count;
        entry.2 = entry.2.saturating_add(stack.weight);
    }
    let mut stacks: Vec<Stack> = merged
        .into_iter()
        .map(|((pid, frames), (truncated, count, weight))| Stack {
            pid,
            frames,
            truncated,
            count,
            weight,
        })
        .collect();
    stacks.sort_by(|a, b| {
        b.weight
            .cmp(&a.weight)
            .then_with(|| b.count.cmp(&a.count))
            .then_with(|| a.frames.len().cmp(&b.frames.len()))
    });
    stacks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::FrameKind;

    fn user(name: &str) -> Frame {
        Frame::new(name.to_owned(), FrameKind::User, Some("/app".to_owned()))
    }

    fn sample(pid: u32, names: &[&str], count: u64) -> NamedStack {
        NamedStack {
            pid,
            roots: vec![Frame::new("app", FrameKind::Root, None)],
            user: names.iter().map(|n| user(n)).collect(),
            kernel: Vec::new(),
            user_depth: names.len(),
            count,
            weight: count * 10,
        }
    }

    #[test]
    fn equal_stacks_merge_and_the_heaviest_comes_first() {
        let stacks = aggregate(
            [
                sample(7, &["main", "a", "leaf"], 2),
                sample(7, &["main", "b"], 5),
                sample(7, &["main", "a", "leaf"], 3),
                sample(8, &["main", "a", "leaf"], 1),
            ],
            127,
        );
        let counts: Vec<(u32, u64, u64)> =
            stacks.iter().map(|s| (s.pid, s.count, s.weight)).collect();
        assert_eq!(counts, [(7, 5, 50), (7, 5, 50), (8, 1, 10)]);
        // Ties go to the shorter stack.
        assert_eq!(stacks[0].frames.len(), 3);
        assert_eq!(stacks[0].frames[0].kind, FrameKind::Root);
        assert!(stacks.iter().all(|s| !s.truncated));
    }

    #[test]
    fn stacks_that_miss_an_entry_point_or_hit_the_depth_are_truncated() {
        let stacks = aggregate([sample(7, &["a", "leaf"], 1)], 127);
        assert!(stacks[0].truncated);
        let deep = aggregate([sample(7, &["main", "a", "b"], 1)], 3);
        assert!(deep[0].truncated);
        let kernel_only = aggregate([sample(7, &[], 1)], 127);
        assert!(!kernel_only[0].truncated);
    }
}
