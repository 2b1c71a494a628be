//! The .NET diagnostics IPC protocol, both directions, as pure functions
//! over bytes (dotnet/diagnostics `documentation/design-docs/ipc-protocol.md`).
//!
//! A message is a 20-byte header — the magic `DOTNET_IPC_V1\0`, the total
//! size (u16), a command set, a command id and a reserved u16 — and a
//! payload. Numbers are little-endian; a string is a u32 count of UTF-16
//! code units including the terminating NUL (or 0 for none), then the
//! units. The runtime answers with command set `0xFF`: `0x00` OK with a
//! command-specific payload, or `0xFF` error with an HRESULT.
//!
//! No Rust crate speaks this protocol; this is ours.

use super::bytes::{BytesError, Cursor};

/// The header's magic.
pub const MAGIC: &[u8; 14] = b"DOTNET_IPC_V1\0";
/// The header's size.
pub const HEADER_LEN: usize = 20;

const SET_DUMP: u8 = 0x01;
const SET_EVENTPIPE: u8 = 0x02;
const SET_PROCESS: u8 = 0x04;
const SET_SERVER: u8 = 0xFF;
const SERVER_OK: u8 = 0x00;
const SERVER_ERROR: u8 = 0xFF;

/// `CORDIAGIPC_E_UNKNOWN_COMMAND`: the runtime does not know the command
/// (for example `ProcessInfo` on .NET Core 3.1, which predates it).
pub const E_UNKNOWN_COMMAND: u32 = 0x8013_1385;

/// One provider of an EventPipe session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The provider's name, e.g. `Microsoft-Windows-DotNETRuntime`.
    pub name: String,
    /// Keywords to enable.
    pub keywords: u64,
    /// Level, 0 (always) to 5 (verbose).
    pub level: u32,
    /// `key=value;…` arguments (EventCounterIntervalSec=1, …), if any.
    pub filter: Option<String>,
}

/// The kinds of dump `CreateCoreDump` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpType {
    /// Stacks and modules (1).
    Mini,
    /// Mini plus the GC heap (2).
    Heap,
    /// Mini with personal data stripped (3).
    Triage,
    /// All memory (4).
    Full,
}

impl DumpType {
    fn code(self) -> u32 {
        match self {
            Self::Mini => 1,
            Self::Heap => 2,
            Self::Triage => 3,
            Self::Full => 4,
        }
    }
}

/// A command the agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `0x0400`: process information (.NET 5 and later).
    ProcessInfo,
    /// `0x0404`: process information with the runtime version (.NET 6+).
    ProcessInfo2,
    /// `0x0203` (`CollectTracing2`): start a streaming session in the
    /// nettrace format; the answer's payload is the session id, and the
    /// nettrace stream follows on the same connection.
    CollectTracing {
        /// The runtime's buffer for the session, in MiB.
        buffer_mb: u32,
        /// Whether the runtime emits rundown events when the session stops.
        rundown: bool,
        /// What to enable.
        providers: Vec<ProviderConfig>,
    },
    /// `0x0201`: stop a session (sent on its own connection).
    StopTracing(u64),
    /// `0x0101`: write a core dump to a path in the process's filesystem.
    CreateCoreDump {
        /// Where the runtime writes it, as the process sees it.
        path: String,
        /// What it contains.
        kind: DumpType,
    },
}

/// What the framing cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpcError {
    /// The message would not fit the header's u16 size.
    #[error("the IPC message would be {0} bytes; the protocol allows 65535")]
    TooLarge(usize),
    /// The answer does not start with the magic.
    #[error("the diagnostic port answered with something that is not a DOTNET_IPC_V1 message")]
    BadMagic,
    /// The header's size is smaller than a header.
    #[error("the diagnostic port's answer has a size of {0} bytes, less than its header")]
    BadSize(u16),
    /// The runtime answered with an error.
    #[error("the runtime answered with error {hresult:#010x} ({})", hresult_name(*hresult))]
    Runtime {
        /// The HRESULT.
        hresult: u32,
    },
    /// The answer is neither OK nor an error.
    #[error("the runtime answered with command {set:#04x}/{id:#04x}, not OK or error")]
    Unexpected {
        /// Command set.
        set: u8,
        /// Command id.
        id: u8,
    },
    /// The payload is shorter than what it must contain.
    #[error("the runtime's answer is truncated: {what}")]
    Truncated {
        /// What the answer was to hold.
        what: &'static str,
        /// Where it ran out.
        #[source]
        source: BytesError,
    },
}

/// The name of the HRESULTs the diagnostics server sends.
pub fn hresult_name(hresult: u32) -> &'static str {
    match hresult {
        0x8013_1384 => "bad encoding",
        E_UNKNOWN_COMMAND => "unknown command",
        0x8013_1386 => "unknown magic",
        0x8013_1387 => "unknown error",
        0x8007_000E => "out of memory",
        0x8007_0057 => "invalid argument",
        0x8000_4005 => "unspecified failure",
        _ => "see the runtime's documentation",
    }
}

fn put_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(&0u32.to_le_bytes()),
        Some(s) => {
            let units: Vec<u16> = s.encode_utf16().chain(std::iter::once(0)).collect();
            out.extend_from_slice(&(units.len() as u32).to_le_bytes());
            for u in units {
                out.extend_from_slice(&u.to_le_bytes());
            }
        }
    }
}

/// The bytes of `command`, header included.
pub fn encode(command: &Command) -> Result<Vec<u8>, IpcError> {
    let mut payload = Vec::new();
    let (set, id) = match command {
        Command::ProcessInfo => (SET_PROCESS, 0x00),
        Command::ProcessInfo2 => (SET_PROCESS, 0x04),
        Command::CollectTracing {
            buffer_mb,
            rundown,
            providers,
        } => {
            payload.extend_from_slice(&buffer_mb.to_le_bytes());
            payload.extend_from_slice(&1u32.to_le_bytes()); // nettrace
            payload.push(u8::from(*rundown));
            payload.extend_from_slice(&(providers.len() as u32).to_le_bytes());
            for p in providers {
                payload.extend_from_slice(&p.keywords.to_le_bytes());
                payload.extend_from_slice(&p.level.to_le_bytes());
                put_string(&mut payload, Some(&p.name));
                put_string(&mut payload, p.filter.as_deref());
            }
            (SET_EVENTPIPE, 0x03)
        }
        Command::StopTracing(session) => {
            payload.extend_from_slice(&session.to_le_bytes());
            (SET_EVENTPIPE, 0x01)
        }
        Command::CreateCoreDump { path, kind } => {
            put_string(&mut payload, Some(path));
            payload.extend_from_slice(&kind.code().to_le_bytes());
            payload.extend_from_slice(&0u32.to_le_bytes()); // no diagnostics on the app's console
            (SET_DUMP, 0x01)
        }
    };
    let size = HEADER_LEN + payload.len();
    let size16 = u16::try_from(size).map_err(|_| IpcError::TooLarge(size))?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&size16.to_le_bytes());
    out.push(set);
    out.push(id);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total size, header included.
    pub size: u16,
    /// Command set.
    pub set: u8,
    /// Command id.
    pub id: u8,
}

impl Header {
    /// The payload's length.
    pub fn payload_len(self) -> usize {
        usize::from(self.size) - HEADER_LEN
    }
}

/// Parses a header.
pub fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, IpcError> {
    if &bytes[..14] != MAGIC {
        return Err(IpcError::BadMagic);
    }
    let size = u16::from_le_bytes([bytes[14], bytes[15]]);
    if usize::from(size) < HEADER_LEN {
        return Err(IpcError::BadSize(size));
    }
    Ok(Header {
        size,
        set: bytes[16],
        id: bytes[17],
    })
}

/// The payload of an OK answer, or the runtime's error.
pub fn ok_payload(header: Header, payload: &[u8]) -> Result<&[u8], IpcError> {
    match (header.set, header.id) {
        (SET_SERVER, SERVER_OK) => Ok(payload),
        (SET_SERVER, SERVER_ERROR) => {
            let hresult = read(payload, "an error's HRESULT", Cursor::u32)?;
            Err(IpcError::Runtime { hresult })
        }
        (set, id) => Err(IpcError::Unexpected { set, id }),
    }
}

/// The u64 an answer starts with (the session id of `CollectTracing` and
/// `StopTracing`).
pub fn u64_payload(payload: &[u8]) -> Result<u64, IpcError> {
    read(payload, "a u64", Cursor::u64)
}

/// The HRESULT `CreateCoreDump` answers with (0 is success).
pub fn hresult_payload(payload: &[u8]) -> Result<u32, IpcError> {
    read(payload, "an HRESULT", Cursor::u32)
}

/// The first value of `payload`, read by `value`; `what` names it in the
/// error.
fn read<'a, T>(
    payload: &'a [u8],
    what: &'static str,
    value: impl FnOnce(&mut Cursor<'a>) -> Result<T, BytesError>,
) -> Result<T, IpcError> {
    value(&mut Cursor::new(payload)).map_err(|source| IpcError::Truncated { what, source })
}

/// What `ProcessInfo`/`ProcessInfo2` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The PID in the process's own namespace.
    pub pid: u64,
    /// The command line.
    pub command_line: String,
    /// `Linux`, …
    pub os: String,
    /// `x64`, …
    pub arch: String,
    /// The entry assembly (`ProcessInfo2`).
    pub assembly: Option<String>,
    /// The CLR's product version (`ProcessInfo2`).
    pub runtime_version: Option<String>,
}

/// Reads the strings of an answer.
/// Parses a `ProcessInfo` (`two == false`) or `ProcessInfo2` answer.
pub fn parse_process_info(payload: &[u8], two: bool) -> Result<ProcessInfo, IpcError> {
    let what = if two { "ProcessInfo2" } else { "ProcessInfo" };
    let truncated = |source| IpcError::Truncated { what, source };
    let mut r = Cursor::new(payload);
    let pid = r.u64().map_err(truncated)?;
    r.take(16).map_err(truncated)?; // the runtime cookie
    let command_line = r.utf16_counted().map_err(truncated)?;
    let os = r.utf16_counted().map_err(truncated)?;
    let arch = r.utf16_counted().map_err(truncated)?;
    let (assembly, runtime_version) = if two {
        (
            Some(r.utf16_counted().map_err(truncated)?),
            Some(r.utf16_counted().map_err(truncated)?),
        )
    } else {
        (None, None)
    };
    Ok(ProcessInfo {
        pid,
        command_line,
        os,
        arch,
        assembly,
        runtime_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect()
    }

    #[test]
    fn collect_tracing_is_encoded_as_the_spec_lays_it_out() {
        let bytes = encode(&Command::CollectTracing {
            buffer_mb: 256,
            rundown: true,
            providers: vec![ProviderConfig {
                name: "MyEventSource".into(),
                keywords: 100,
                level: 2,
                filter: Some("a=1".into()),
            }],
        })
        .unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(b"DOTNET_IPC_V1\0");
        let payload_len = 4 + 4 + 1 + 4 + 8 + 4 + 4 + 28 + 4 + 8;
        want.extend_from_slice(&((20 + payload_len) as u16).to_le_bytes());
        want.extend_from_slice(&[0x02, 0x03, 0, 0]);
        want.extend_from_slice(&256u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.push(1);
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&100u64.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&14u32.to_le_bytes());
        want.extend_from_slice(&utf16("MyEventSource"));
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(&utf16("a=1"));
        assert_eq!(bytes, want);
    }

    #[test]
    fn stop_process_info_and_dump_commands() {
        let stop = encode(&Command::StopTracing(0x1122_3344_5566_7788)).unwrap();
        assert_eq!(stop.len(), 28);
        assert_eq!(&stop[14..20], &[28, 0, 0x02, 0x01, 0, 0]);
        assert_eq!(&stop[20..], &0x1122_3344_5566_7788u64.to_le_bytes());

        let info = encode(&Command::ProcessInfo).unwrap();
        assert_eq!(&info[..], b"DOTNET_IPC_V1\0\x14\x00\x04\x00\x00\x00");

        let dump = encode(&Command::CreateCoreDump {
            path: "/tmp/d".into(),
            kind: DumpType::Full,
        })
        .unwrap();
        assert_eq!(&dump[16..18], &[0x01, 0x01]);
        assert_eq!(&dump[20..24], &7u32.to_le_bytes());
        assert_eq!(&dump[24..38], &utf16("/tmp/d")[..]);
        assert_eq!(&dump[38..], &[4, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn an_empty_filter_is_a_zero_length_string() {
        let bytes = encode(&Command::CollectTracing {
            buffer_mb: 1,
            rundown: false,
            providers: vec![ProviderConfig {
                name: "P".into(),
                keywords: 0,
                level: 4,
                filter: None,
            }],
        })
        .unwrap();
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 0, 0, 0]);
        assert_eq!(bytes[28], 0, "rundown off");
    }

    #[test]
    fn too_large_messages_are_refused() {
        let providers = (0..2000)
            .map(|i| ProviderConfig {
                name: format!("Provider-{i}"),
                keywords: 0,
                level: 5,
                filter: None,
            })
            .collect();
        let e = encode(&Command::CollectTracing {
            buffer_mb: 1,
            rundown: false,
            providers,
        })
        .unwrap_err();
        assert!(matches!(e, IpcError::TooLarge(n) if n > 65535));
    }

    /// The answers as the 3.1 runtime sent them here.
    #[test]
    fn answers_are_parsed() {
        let ok = *b"DOTNET_IPC_V1\0\x1c\x00\xff\x00\x00\x00";
        let h = parse_header(&ok).unwrap();
        assert_eq!(h.payload_len(), 8);
        let payload = 0x7f98_000e_d000u64.to_le_bytes();
        assert_eq!(
            u64_payload(ok_payload(h, &payload).unwrap()).unwrap(),
            0x7f98_000e_d000
        );

        let err = *b"DOTNET_IPC_V1\0\x18\x00\xff\xff\x00\x00";
        let h = parse_header(&err).unwrap();
        let e = ok_payload(h, &[0x85, 0x13, 0x13, 0x80]).unwrap_err();
        assert_eq!(
            e,
            IpcError::Runtime {
                hresult: E_UNKNOWN_COMMAND
            }
        );
        assert!(e.to_string().contains("unknown command"), "{e}");

        let mut bad = ok;
        bad[0] = b'X';
        assert_eq!(parse_header(&bad), Err(IpcError::BadMagic));
        let mut small = ok;
        small[14] = 3;
        assert_eq!(parse_header(&small), Err(IpcError::BadSize(3)));
        let other = *b"DOTNET_IPC_V1\0\x14\x00\x02\x02\x00\x00";
        assert_eq!(
            ok_payload(parse_header(&other).unwrap(), &[]),
            Err(IpcError::Unexpected { set: 2, id: 2 })
        );
        assert!(u64_payload(&[1, 2, 3]).is_err());
    }

    #[test]
    fn process_info_answers_are_parsed() {
        let mut p = Vec::new();
        p.extend_from_slice(&42u64.to_le_bytes());
        p.extend_from_slice(&[7; 16]);
        for s in ["/usr/bin/dotnet app.dll", "Linux", "x64", "app", "6.0.1"] {
            p.extend_from_slice(&((s.encode_utf16().count() + 1) as u32).to_le_bytes());
            p.extend_from_slice(&utf16(s));
        }
        let info = parse_process_info(&p, true).unwrap();
        assert_eq!(info.pid, 42);
        assert_eq!(info.command_line, "/usr/bin/dotnet app.dll");
        assert_eq!(info.arch, "x64");
        assert_eq!(info.runtime_version.as_deref(), Some("6.0.1"));
        let one = parse_process_info(&p, false).unwrap();
        assert_eq!(one.assembly, None);
        assert!(parse_process_info(&p[..30], false).is_err());
    }
}
