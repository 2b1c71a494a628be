//! Where the agent's answers go: memory, a file written through
//! `FILE.partial` and renamed when complete, or the terminal line by line;
//! and the progress bar of captures of known length.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::PluginError;

/// Where the agent's answer goes.
pub(crate) enum Sink<'a> {
    /// Kept in memory.
    Memory(&'a mut Vec<u8>),
    /// Written to a file (through a temporary name, renamed at the end).
    File(&'a str),
    /// Printed line by line as it arrives ([`terminal_safe`]).
    Lines(&'a dyn Fn(&str) -> String),
}

/// `text` safe to print on a terminal: the app names its processes,
/// arguments, symbols and LTTng fields, and an escape sequence in them
/// (ESC, CSI, OSC …) would be run by the user's terminal. Control
/// characters other than newline and tab, DEL, and the C1 controls
/// (U+0080–U+009F, which some terminals take as CSI and friends) are shown
/// as `\u{…}` instead.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| (c.is_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The agent's JSON as `render` lays it out, or as it came if it cannot,
/// made [`terminal_safe`].
pub(crate) fn print_rendered(body: &[u8], render: fn(&[u8]) -> Option<String>) {
    let text = render(body).unwrap_or_else(|| String::from_utf8_lossy(body).into());
    print!("{}", terminal_safe(&text));
}

/// NDJSON lines printed as they come.
pub(crate) fn as_is(line: &str) -> String {
    line.to_owned()
}

pub(crate) fn write_error(file: &str, source: std::io::Error) -> PluginError {
    PluginError::Write {
        file: file.to_owned(),
        source,
    }
}

/// Copies the body to `file` via `file.partial`. A short body that is the
/// agent's JSON error (curl's HTTP-error case) goes to `error_body` instead.
pub(crate) fn save(
    mut out: impl std::io::Read,
    file: &str,
    progress: &Option<Progress>,
    error_body: &mut Vec<u8>,
) -> Result<(), PluginError> {
    const DECIDE_AFTER: usize = 4096;
    let partial = PathBuf::from(format!("{file}.partial"));
    let create = |head: &[u8]| -> Result<std::fs::File, PluginError> {
        let mut f = std::fs::File::create(&partial).map_err(|e| write_error(file, e))?;
        f.write_all(head).map_err(|e| write_error(file, e))?;
        Ok(f)
    };
    let mut head = Vec::new();
    let mut handle: Option<std::fs::File> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = out.read(&mut chunk).map_err(|e| write_error(file, e))?;
        if n == 0 {
            break;
        }
        if let Some(progress) = progress {
            progress.receiving(n);
        }
        match handle.as_mut() {
            Some(f) => f.write_all(&chunk[..n]).map_err(|e| write_error(file, e))?,
            None => {
                head.extend_from_slice(&chunk[..n]);
                if head.len() >= DECIDE_AFTER {
                    handle = Some(create(&head)?);
                }
            }
        }
    }
    if handle.is_none() {
        if head.starts_with(b"{\"error\"") {
            *error_body = head;
            return Ok(());
        }
        handle = Some(create(&head)?);
    }
    drop(handle);
    std::fs::rename(&partial, file).map_err(|e| write_error(file, e))
}

/// Writes `bytes` to `file` through `FILE.partial`, renamed when
/// complete: a file that exists is whole.
pub(crate) fn write_whole(file: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let partial = PathBuf::from(format!("{file}.partial"));
    std::fs::write(&partial, bytes).map_err(|e| write_error(file, e))?;
    std::fs::rename(&partial, file).map_err(|e| write_error(file, e))
}

/// Which progress bar a request shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bar {
    /// None.
    None,
    /// Time left of a capture of this many seconds, until bytes arrive.
    Seconds(u32),
    /// Bytes received so far (dumps).
    Bytes,
    /// Time waited for an answer whose length is not known (this says
    /// what the agent is doing).
    Waiting(&'static str),
}

/// A progress bar: time remaining for captures of known length, or bytes
/// received for downloads.
pub(crate) struct Progress {
    done: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    bar: indicatif::ProgressBar,
    bytes: bool,
}

/// One pod's line among the lines of a fleet capture (`--all`).
#[derive(Clone)]
pub(crate) struct Line {
    /// The lines, drawn together.
    pub(crate) lines: indicatif::MultiProgress,
    /// What starts this one: the pod's name.
    pub(crate) prefix: String,
}

impl Line {
    /// Prints `text` above the lines (on stderr as it is when they are not
    /// drawn, as when stderr is not a terminal).
    pub(crate) fn say(&self, text: &str) {
        let text = terminal_safe(text);
        if self.lines.is_hidden() || self.lines.println(&text).is_err() {
            eprintln!("{text}");
        }
    }
}

impl Progress {
    /// The progress `bar` asks for, drawn alone or as one pod's `line`.
    pub(crate) fn start(bar: Bar, line: Option<&Line>) -> Option<Self> {
        let progress = Self::of(bar)?;
        if let Some(line) = line {
            let bar = line.lines.add(progress.bar.clone());
            bar.set_prefix(format!("{} ", line.prefix));
        }
        Some(progress)
    }

    fn of(bar: Bar) -> Option<Self> {
        match bar {
            Bar::None => None,
            Bar::Seconds(seconds) => Some(Self::capture(seconds)),
            Bar::Waiting(what) => {
                let bar = indicatif::ProgressBar::new_spinner();
                if let Ok(style) =
                    indicatif::ProgressStyle::with_template("{prefix}{spinner} {msg} {elapsed}")
                {
                    bar.set_style(style);
                }
                bar.set_message(what);
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(Self {
                    done: Arc::new(AtomicBool::new(true)),
                    ticker: None,
                    bar,
                    bytes: false,
                })
            }
            Bar::Bytes => {
                let bar = indicatif::ProgressBar::new_spinner();
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{prefix}{spinner} received {bytes} ({binary_bytes_per_sec}) {msg}",
                ) {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(Self {
                    done: Arc::new(AtomicBool::new(true)),
                    ticker: None,
                    bar,
                    bytes: true,
                })
            }
        }
    }

    fn capture(seconds: u32) -> Self {
        let total = u64::from(seconds) * 10;
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix}{spinner} capturing {bar:30} {msg}")
        {
            bar.set_style(style);
        }
        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let bar = bar.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    let elapsed = start.elapsed();
                    bar.set_position((elapsed.as_millis() / 100) as u64);
                    let left = Duration::from_secs(u64::from(seconds)).saturating_sub(elapsed);
                    bar.set_message(if left.is_zero() {
                        "processing…".to_owned()
                    } else {
                        format!("{}s remaining", left.as_secs() + 1)
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            done,
            ticker: Some(ticker),
            bar,
            bytes: false,
        }
    }

    pub(crate) fn receiving(&self, n: usize) {
        if self.bytes {
            self.bar.inc(n as u64);
        } else {
            self.bar.set_message("receiving…");
        }
    }

    pub(crate) fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod terminal_tests {
    use super::terminal_safe;

    #[test]
    fn escape_sequences_from_the_app_are_shown_not_run() {
        // A process that calls itself a screen-clearing, title-setting,
        // hyperlinking name; and a C1 CSI.
        let name = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m app\tok\n";
        let safe = terminal_safe(name);
        assert!(
            !safe
                .chars()
                .any(|c| c == '\u{1b}' || c == '\u{7}' || c == '\u{9b}'),
            "{safe:?}"
        );
        assert_eq!(
            safe,
            "evil\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{9b}31m app\tok\n"
        );
        // Ordinary text, and non-ASCII letters, pass unchanged.
        assert!(matches!(
            terminal_safe("fib;main;Größe 12\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
