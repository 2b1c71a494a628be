//! ELF files of the app, read a piece at a time and within limits.
//!
//! Every ELF file the agent looks into (a process's executable, the
//! libraries it maps, a binary named by a probe) is the app's: it can be
//! a gigabyte of sparse file, claim a section larger than itself, or be
//! truncated while the agent reads it. So this module never maps a file
//! and never reads one whole:
//!
//! - the file is opened by [`crate::rootfs`] (a regular file, checked
//!   before it is opened for reading, inside the process's root or
//!   through `/proc/PID/map_files`, never on FUSE);
//! - only the byte ranges asked for are read, with `pread`, into a
//!   [`Sparse`] image: the headers first, then the sections a caller
//!   names, each under [`SECTION_LIMIT`] and all of them under
//!   [`FILE_LIMIT`];
//! - `object` parses that image, and any read outside the ranges fetched
//!   fails as a malformed file would, instead of reading more.
//!
//! A file that shrinks while it is read gives a short read: an error for
//! that file, not a `SIGBUS` in the agent (which an `mmap` would give; the
//! reason the agent does not let a library such as blazesym open and map
//! the app's files).
//!
//! Only 64-bit little-endian ELF is read (x86-64, the agent's target).

mod reader;
mod sparse;
mod symbols;

pub use reader::{Elf, ElfError, FILE_LIMIT, SECTION_LIMIT, Section, Segment};
pub use sparse::Sparse;
pub use symbols::{Symbols, debug_file_path, demangle, file_offset, stated_address};
