//! Event metadata (the payload of a nettrace metadata record) and the
//! decoding of event payloads into typed JSON fields.
//!
//! An `EventSource`'s events describe their own fields. The runtime's own
//! events (`Microsoft-Windows-DotNETRuntime`, `…Rundown`) come with an
//! empty name and no fields up to .NET 8: their layouts live in the
//! runtime's manifest (`ClrEtwAll.man`). [`builtin`] has the layouts of the
//! ones tracecar's presets enable — GC, exceptions, JIT and method/module
//! rundown, thread pool — written from that manifest and checked against
//! the 3.1 runtime here; other runtime events keep their id and raw
//! payload.

use serde_json::{Map, Value};

use super::bytes::{BytesError, Cursor};

/// The runtime's provider.
pub const RUNTIME: &str = "Microsoft-Windows-DotNETRuntime";
/// The runtime's rundown provider.
pub const RUNDOWN: &str = "Microsoft-Windows-DotNETRuntimeRundown";

/// A field's type (System.TypeCode numbering, as EventPipe uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// 4-byte Win32 BOOL.
    Bool,
    /// One UTF-16 unit.
    Char,
    /// Signed byte.
    I8,
    /// Byte.
    U8,
    /// i16.
    I16,
    /// u16.
    U16,
    /// i32.
    I32,
    /// u32.
    U32,
    /// i64.
    I64,
    /// u64 (pointers of 64-bit processes, too).
    U64,
    /// f32.
    F32,
    /// f64.
    F64,
    /// 16-byte decimal, shown as hex.
    Decimal,
    /// A FILETIME tick count (100 ns since 1601).
    DateTime,
    /// A GUID.
    Guid,
    /// NUL-terminated UTF-16.
    String,
    /// Nested fields.
    Object(Vec<Field>),
    /// u16 count, then that many elements (nettrace 5's V2 params).
    Array(Box<FieldType>),
}

/// A named field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: FieldType,
}

/// What a metadata record says about one kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The id events refer to.
    pub metadata_id: u32,
    /// The provider.
    pub provider: String,
    /// The event's id within its provider.
    pub event_id: u32,
    /// The event's name (from the record, or [`builtin`]).
    pub name: String,
    /// Keywords.
    pub keywords: u64,
    /// Version.
    pub version: u32,
    /// Level.
    pub level: u32,
    /// The payload's layout; `None` when nothing describes it.
    pub fields: Option<Vec<Field>>,
}

/// Why an event description or payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The bytes end before a value.
    #[error(transparent)]
    Bytes(#[from] BytesError),
    /// A field type this decoder does not know.
    #[error("unknown field type code {0}")]
    UnknownType(u32),
    /// Objects nested deeper than [`MAX_DEPTH`].
    #[error("fields nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More fields than [`MAX_FIELDS`] in one object.
    #[error("{0} fields in one object, more than {MAX_FIELDS}")]
    TooManyFields(u32),
    /// A V2 field whose size cannot hold its own size.
    #[error("a field description of {0} bytes, under 4")]
    FieldSize(u32),
    /// A payload field that cannot be decoded.
    #[error("field {name}: {source}")]
    Field {
        /// The field.
        name: String,
        /// Why.
        #[source]
        source: Box<MetadataError>,
    },
}

/// How deep objects nest in an event description at most.
pub const MAX_DEPTH: u32 = 8;
/// Fields of one object at most.
pub const MAX_FIELDS: u32 = 1024;

const TYPE_OBJECT: u32 = 1;
const TYPE_ARRAY: u32 = 19;

fn type_of(code: u32) -> Result<FieldType, MetadataError> {
    Ok(match code {
        3 => FieldType::Bool,
        4 => FieldType::Char,
        5 => FieldType::I8,
        6 => FieldType::U8,
        7 => FieldType::I16,
        8 => FieldType::U16,
        9 => FieldType::I32,
        10 => FieldType::U32,
        11 => FieldType::I64,
        12 => FieldType::U64,
        13 => FieldType::F32,
        14 => FieldType::F64,
        15 => FieldType::Decimal,
        16 => FieldType::DateTime,
        17 => FieldType::Guid,
        18 => FieldType::String,
        other => return Err(MetadataError::UnknownType(other)),
    })
}

/// V1 field descriptions: a count, then (type code, [nested], name).
fn v1_fields(b: &mut Cursor<'_>, depth: u32) -> Result<Vec<Field>, MetadataError> {
    if depth > MAX_DEPTH {
        return Err(MetadataError::TooDeep);
    }
    let count = b.u32()?;
    if count > MAX_FIELDS {
        return Err(MetadataError::TooManyFields(count));
    }
    let mut fields = Vec::new();
    for _ in 0..count {
        let code = b.u32()?;
        let ty = if code == TYPE_OBJECT {
            FieldType::Object(v1_fields(b, depth + 1)?)
        } else {
            type_of(code)?
        };
        let name = b.utf16z()?;
        fields.push(Field { name, ty });
    }
    Ok(fields)
}

/// V2 field descriptions (nettrace 5's V2Params tag): each is sized.
fn v2_fields(b: &mut Cursor<'_>, depth: u32) -> Result<Vec<Field>, MetadataError> {
    if depth > MAX_DEPTH {
        return Err(MetadataError::TooDeep);
    }
    let count = b.u32()?;
    if count > MAX_FIELDS {
        return Err(MetadataError::TooManyFields(count));
    }
    let mut fields = Vec::new();
    for _ in 0..count {
        let size = b.u32()?;
        let body = b.take(
            usize::try_from(size.checked_sub(4).ok_or(MetadataError::FieldSize(size))?)
                .unwrap_or(usize::MAX),
        )?;
        let mut f = Cursor::new(body);
        let name = f.utf16z()?;
        let code = f.u32()?;
        let ty = v2_type(&mut f, code, depth)?;
        fields.push(Field { name, ty });
    }
    Ok(fields)
}

fn v2_type(f: &mut Cursor<'_>, code: u32, depth: u32) -> Result<FieldType, MetadataError> {
    Ok(match code {
        TYPE_OBJECT => FieldType::Object(v2_fields(f, depth + 1)?),
        TYPE_ARRAY => {
            let element = f.u32()?;
            FieldType::Array(Box::new(v2_type(f, element, depth + 1)?))
        }
        other => type_of(other)?,
    })
}

/// Parses one metadata record's payload.
pub fn parse(payload: &[u8]) -> Result<EventMetadata, MetadataError> {
    let mut b = Cursor::new(payload);
    let metadata_id = b.u32()?;
    let provider = b.utf16z()?;
    let event_id = b.u32()?;
    let name = b.utf16z()?;
    let keywords = b.u64()?;
    let version = b.u32()?;
    let level = b.u32()?;
    let mut fields = if b.remaining() == 0 {
        Vec::new()
    } else {
        v1_fields(&mut b, 0)?
    };
    // nettrace 5: tags (opcode, V2 params) after the V1 fields.
    while b.remaining() >= 5 {
        let len = b.u32()? as usize;
        let kind = b.u8()?;
        let body = b.take(len)?;
        if kind == 2 {
            fields = v2_fields(&mut Cursor::new(body), 0)?;
        }
    }
    let mut m = EventMetadata {
        metadata_id,
        provider,
        event_id,
        name,
        keywords,
        version,
        level,
        fields: Some(fields),
    };
    if m.name.is_empty() && m.fields.as_ref().is_some_and(Vec::is_empty) {
        match builtin(&m.provider, m.event_id) {
            Some((name, fields)) => {
                m.name = name.to_string();
                m.fields = Some(fields);
            }
            None => {
                m.name = format!("EventID({})", m.event_id);
                // An empty description of a runtime event means "not
                // described", not "no payload".
                if m.provider == RUNTIME || m.provider == RUNDOWN {
                    m.fields = None;
                }
            }
        }
    }
    Ok(m)
}

use FieldType as T;

fn fields(list: &[(&str, FieldType)]) -> Vec<Field> {
    list.iter()
        .map(|(name, ty)| Field {
            name: (*name).to_string(),
            ty: ty.clone(),
        })
        .collect()
}

/// `MethodLoadVerbose` and the rundown's `MethodDC*Verbose`.
fn method_verbose() -> Vec<Field> {
    fields(&[
        ("MethodID", T::U64),
        ("ModuleID", T::U64),
        ("MethodStartAddress", T::U64),
        ("MethodSize", T::U32),
        ("MethodToken", T::U32),
        ("MethodFlags", T::U32),
        ("MethodNamespace", T::String),
        ("MethodName", T::String),
        ("MethodSignature", T::String),
        ("ClrInstanceID", T::U16),
        ("ReJITID", T::U64),
    ])
}

/// `ModuleLoad` and the rundown's `ModuleDC*`.
fn module() -> Vec<Field> {
    fields(&[
        ("ModuleID", T::U64),
        ("AssemblyID", T::U64),
        ("ModuleFlags", T::U32),
        ("Reserved1", T::U32),
        ("ModuleILPath", T::String),
        ("ModuleNativePath", T::String),
        ("ClrInstanceID", T::U16),
        ("ManagedPdbSignature", T::Guid),
        ("ManagedPdbAge", T::U32),
        ("ManagedPdbBuildPath", T::String),
        ("NativePdbSignature", T::Guid),
        ("NativePdbAge", T::U32),
        ("NativePdbBuildPath", T::String),
    ])
}

/// The layouts of the runtime events the presets enable (fields of later
/// event versions come last, and decoding stops where a payload ends).
pub fn builtin(provider: &str, id: u32) -> Option<(&'static str, Vec<Field>)> {
    let clr = ("ClrInstanceID", T::U16);
    Some(match (provider, id) {
        (RUNTIME, 1) => (
            "GCStart",
            fields(&[
                ("Count", T::U32),
                ("Depth", T::U32),
                ("Reason", T::U32),
                ("Type", T::U32),
                clr,
                ("ClientSequenceNumber", T::U64),
            ]),
        ),
        (RUNTIME, 2) => (
            "GCEnd",
            fields(&[("Count", T::U32), ("Depth", T::U32), clr]),
        ),
        (RUNTIME, 3) => ("GCRestartEEEnd", fields(&[clr])),
        (RUNTIME, 4) => (
            "GCHeapStats",
            fields(&[
                ("GenerationSize0", T::U64),
                ("TotalPromotedSize0", T::U64),
                ("GenerationSize1", T::U64),
                ("TotalPromotedSize1", T::U64),
                ("GenerationSize2", T::U64),
                ("TotalPromotedSize2", T::U64),
                ("GenerationSize3", T::U64),
                ("TotalPromotedSize3", T::U64),
                ("FinalizationPromotedSize", T::U64),
                ("FinalizationPromotedCount", T::U64),
                ("PinnedObjectCount", T::U32),
                ("SinkBlockCount", T::U32),
                ("GCHandleCount", T::U32),
                clr,
                ("GenerationSize4", T::U64),
                ("TotalPromotedSize4", T::U64),
            ]),
        ),
        (RUNTIME, 7) => ("GCRestartEEBegin", fields(&[clr])),
        (RUNTIME, 8) => ("GCSuspendEEEnd", fields(&[clr])),
        (RUNTIME, 9) => (
            "GCSuspendEEBegin",
            fields(&[("Reason", T::U32), ("Count", T::U32), clr]),
        ),
        (RUNTIME, 10) => (
            "GCAllocationTick",
            fields(&[
                ("AllocationAmount", T::U32),
                ("AllocationKind", T::U32),
                clr,
                ("AllocationAmount64", T::U64),
                ("TypeID", T::U64),
                ("TypeName", T::String),
                ("HeapIndex", T::U32),
                ("Address", T::U64),
                ("ObjectSize", T::U64),
            ]),
        ),
        (RUNTIME, 35) => ("GCTriggered", fields(&[("Reason", T::U32), clr])),
        (RUNTIME, 50) => (
            "ThreadPoolWorkerThreadStart",
            fields(&[
                ("ActiveWorkerThreadCount", T::U32),
                ("RetiredWorkerThreadCount", T::U32),
                clr,
            ]),
        ),
        (RUNTIME, 51) => (
            "ThreadPoolWorkerThreadStop",
            fields(&[
                ("ActiveWorkerThreadCount", T::U32),
                ("RetiredWorkerThreadCount", T::U32),
                clr,
            ]),
        ),
        (RUNTIME, 54) => (
            "ThreadPoolWorkerThreadAdjustmentAdjustment",
            fields(&[
                ("AverageThroughput", T::F64),
                ("NewWorkerThreadCount", T::U32),
                ("Reason", T::U32),
                clr,
            ]),
        ),
        (RUNTIME, 81) => (
            "ContentionStart",
            fields(&[
                ("ContentionFlags", T::U8),
                clr,
                ("LockID", T::U64),
                ("AssociatedObjectID", T::U64),
                ("LockOwnerThreadID", T::U64),
            ]),
        ),
        (RUNTIME, 91) => (
            "ContentionStop",
            fields(&[("ContentionFlags", T::U8), clr, ("DurationNs", T::F64)]),
        ),
        (RUNTIME, 80) => (
            "ExceptionThrown",
            fields(&[
                ("ExceptionType", T::String),
                ("ExceptionMessage", T::String),
                ("ExceptionEIP", T::U64),
                ("ExceptionHRESULT", T::U32),
                ("ExceptionFlags", T::U16),
                clr,
            ]),
        ),
        (RUNTIME, 250) => (
            "ExceptionCatchStart",
            fields(&[
                ("EntryEIP", T::U64),
                ("MethodID", T::U64),
                ("MethodName", T::String),
                clr,
            ]),
        ),
        (RUNTIME, 143) => ("MethodLoadVerbose", method_verbose()),
        (RUNTIME, 144) => ("MethodUnloadVerbose", method_verbose()),
        (RUNTIME, 145) => (
            "MethodJittingStarted",
            fields(&[
                ("MethodID", T::U64),
                ("ModuleID", T::U64),
                ("MethodToken", T::U32),
                ("MethodILSize", T::U32),
                ("MethodNamespace", T::String),
                ("MethodName", T::String),
                ("MethodSignature", T::String),
                clr,
            ]),
        ),
        (RUNTIME, 152) => ("ModuleLoad", module()),
        (RUNTIME, 153) => ("ModuleUnload", module()),
        (RUNDOWN, 143) => ("MethodDCStartVerbose", method_verbose()),
        (RUNDOWN, 144) => ("MethodDCEndVerbose", method_verbose()),
        (RUNDOWN, 145) => ("DCStartComplete", fields(&[clr])),
        (RUNDOWN, 146) => ("DCEndComplete", fields(&[clr])),
        (RUNDOWN, 147) => ("DCStartInit", fields(&[clr])),
        (RUNDOWN, 148) => ("DCEndInit", fields(&[clr])),
        (RUNDOWN, 153) => ("ModuleDCStart", module()),
        (RUNDOWN, 154) => ("ModuleDCEnd", module()),
        (RUNDOWN, 187) => (
            "RuntimeInformationDCStart",
            fields(&[
                clr,
                ("Sku", T::U16),
                ("BclMajorVersion", T::U16),
                ("BclMinorVersion", T::U16),
                ("BclBuildNumber", T::U16),
                ("BclQfeNumber", T::U16),
                ("VMMajorVersion", T::U16),
                ("VMMinorVersion", T::U16),
                ("VMBuildNumber", T::U16),
                ("VMQfeNumber", T::U16),
                ("StartupFlags", T::U32),
                ("StartupMode", T::U8),
                ("CommandLine", T::String),
                ("ComObjectGuid", T::Guid),
                ("RuntimeDllPath", T::String),
            ]),
        ),
        _ => return None,
    })
}

/// Decodes `payload` by `fields`. Fields past the payload's end are
/// absent (an older version of the event); bytes past the last field are
/// ignored (a newer one).
pub fn decode(fields: &[Field], payload: &[u8]) -> Result<Map<String, Value>, MetadataError> {
    let mut b = Cursor::new(payload);
    decode_into(fields, &mut b, 0)
}

fn decode_into(
    fields: &[Field],
    b: &mut Cursor<'_>,
    depth: u32,
) -> Result<Map<String, Value>, MetadataError> {
    let mut out = Map::new();
    for f in fields {
        if b.remaining() == 0 && depth == 0 {
            break;
        }
        let v = value(&f.ty, b, depth).map_err(|e| MetadataError::Field {
            name: f.name.clone(),
            source: Box::new(e),
        })?;
        out.insert(f.name.clone(), v);
    }
    Ok(out)
}

fn value(ty: &FieldType, b: &mut Cursor<'_>, depth: u32) -> Result<Value, MetadataError> {
    Ok(match ty {
        T::Bool => Value::Bool(b.u32()? != 0),
        T::Char => Value::String(String::from_utf16_lossy(&[b.u16()?])),
        T::I8 => Value::from(b.u8()? as i8),
        T::U8 => Value::from(b.u8()?),
        T::I16 => Value::from(b.u16()? as i16),
        T::U16 => Value::from(b.u16()?),
        T::I32 => Value::from(b.u32()? as i32),
        T::U32 => Value::from(b.u32()?),
        T::I64 => Value::from(b.u64()? as i64),
        T::U64 => Value::from(b.u64()?),
        T::F32 => Value::from(f64::from(f32::from_bits(b.u32()?))),
        T::F64 => Value::from(f64::from_bits(b.u64()?)),
        T::DateTime => Value::from(b.u64()? as i64),
        T::Decimal => Value::String(hex(b.take(16)?)),
        T::Guid => Value::String(guid(b.take(16)?)),
        T::String => Value::String(b.utf16z()?),
        T::Object(inner) => Value::Object(decode_into(inner, b, depth + 1)?),
        T::Array(element) => {
            let n = b.u16()?;
            let mut items = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                items.push(value(element, b, depth + 1)?);
            }
            Value::Array(items)
        }
    })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        hex(&b[8..10]),
        hex(&b[10..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect()
    }

    fn record(provider: &str, id: u32, name: &str, fields: &[(u32, &str)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend(utf16z(provider));
        p.extend_from_slice(&id.to_le_bytes());
        p.extend(utf16z(name));
        p.extend_from_slice(&0u64.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&4u32.to_le_bytes());
        p.extend_from_slice(&(fields.len() as u32).to_le_bytes());
        for (code, name) in fields {
            p.extend_from_slice(&code.to_le_bytes());
            p.extend(utf16z(name));
        }
        p
    }

    #[test]
    fn an_event_sources_own_description_decodes_its_payload() {
        let m = parse(&record(
            "Tracecar-Sample",
            1,
            "Request",
            &[(9, "Id"), (18, "Name"), (11, "Value"), (3, "Ok")],
        ))
        .unwrap();
        assert_eq!(m.name, "Request");
        let mut payload = Vec::new();
        payload.extend_from_slice(&(-5i32).to_le_bytes());
        payload.extend(utf16z("héllo"));
        payload.extend_from_slice(&(1i64 << 40).to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        let v = decode(m.fields.as_deref().unwrap(), &payload).unwrap();
        assert_eq!(
            Value::Object(v),
            serde_json::json!({"Id": -5, "Name": "héllo", "Value": 1i64 << 40, "Ok": true})
        );
    }

    #[test]
    fn runtime_events_take_their_layout_from_the_manifest() {
        let m = parse(&record(RUNTIME, 1, "", &[])).unwrap();
        assert_eq!(m.name, "GCStart");
        // A version-1 GCStart: no ClientSequenceNumber.
        let mut payload = Vec::new();
        for v in [3u32, 2, 1, 0] {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        payload.extend_from_slice(&9u16.to_le_bytes());
        let v = decode(m.fields.as_deref().unwrap(), &payload).unwrap();
        assert_eq!(
            Value::Object(v),
            serde_json::json!({"Count": 3, "Depth": 2, "Reason": 1, "Type": 0, "ClrInstanceID": 9})
        );
        let unknown = parse(&record(RUNTIME, 9999, "", &[])).unwrap();
        assert_eq!(unknown.name, "EventID(9999)");
        assert_eq!(unknown.fields, None);
    }

    #[test]
    fn truncated_and_unknown_descriptions_are_errors() {
        let full = record("P", 1, "E", &[(9, "A")]);
        assert!(parse(&full[..full.len() - 3]).is_err());
        assert!(parse(&record("P", 1, "E", &[(99, "A")])).is_err());
        let m = parse(&record("P", 1, "E", &[(18, "S")])).unwrap();
        assert!(decode(m.fields.as_deref().unwrap(), &[b'a', 0, b'b']).is_err());
    }

    #[test]
    fn guids_are_formatted_like_dotnet() {
        let b = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(guid(&b), "00112233-4455-6677-8899-aabbccddeeff");
    }
}
