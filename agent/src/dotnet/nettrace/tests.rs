//! The nettrace decoder's tests: recorded fixtures, fed whole and in
//! pieces, and streams that break the format or its limits.

use super::*;
use crate::dotnet::metadata;

#[test]
fn varints_and_padding() {
    let mut c = Cursor::new(&[0xAC, 0x02, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert_eq!(c.varint32().unwrap(), 300);
    assert_eq!(c.varint32().unwrap(), 5);
    assert!(c.varint32().is_err(), "six bytes for a u32");
    assert_eq!(padding(0), 0);
    assert_eq!(padding(5), 3);
    assert_eq!(padding(7), 1);
}

#[test]
fn nothing_is_kept_past_an_error_or_a_limit() {
    // A corrupt object, then the stream goes on at socket speed:
    // nothing of it is buffered, and the error stays.
    let mut d = Decoder::new();
    d.feed(b"Nettrace\x14\0\0\0!FastSerialization.1");
    d.feed(&[TAG_BEGIN, 9, 9, 9]);
    d.feed(&[0u8; 200]);
    let error = d.next_event().unwrap_err();
    for _ in 0..64 {
        d.feed(&[0u8; 1 << 20]);
        assert_eq!(d.next_event(), Err(error.clone()));
    }
    assert_eq!(d.pending(), 0);
    assert_eq!(d.failed(), Some(&error));
    // A block larger than any runtime writes is refused when its size
    // is read, not buffered until it is complete.
    let mut d = Decoder::new();
    d.feed(b"Nettrace\x14\0\0\0!FastSerialization.1");
    let mut object = vec![TAG_BEGIN, TAG_BEGIN, TAG_NULL];
    object.extend(2u32.to_le_bytes());
    object.extend(2u32.to_le_bytes());
    object.extend(10u32.to_le_bytes());
    object.extend(b"EventBlock");
    object.push(TAG_END);
    object.extend(u32::MAX.to_le_bytes());
    d.feed(&object);
    assert!(matches!(d.next_event(), Err(NettraceError::Corrupt { .. })));
    assert_eq!(d.pending(), 0);
    // Event descriptions and stacks: a stream past the limits fails
    // instead of growing the decoder.
    let small = |metadata_bytes, stack_bytes| {
        let mut d = Decoder::with_limits(Limits {
            metadata_bytes,
            stack_bytes,
            threads: 1,
        });
        d.feed(SAMPLE);
        loop {
            match d.next_event() {
                Ok(Some(_)) => {}
                other => break other.map(|_| d.events()),
            }
        }
    };
    let error = small(64, usize::MAX).unwrap_err().to_string();
    assert!(error.contains("event descriptions"), "{error}");
    let error = small(usize::MAX, 64).unwrap_err().to_string();
    assert!(error.contains("stacks without a sequence point"), "{error}");
    // One tracked thread is enough to decode (drops go uncounted).
    assert!(small(usize::MAX, usize::MAX).unwrap() > 0);
}

#[test]
fn other_streams_are_refused() {
    let mut d = Decoder::new();
    d.feed(b"GIF89a this is not a trace at all....");
    assert_eq!(d.next_event(), Err(NettraceError::NotNettrace));
}

#[test]
fn a_short_stream_waits_for_more() {
    let mut d = Decoder::new();
    d.feed(b"Nettrace\x14\0\0\0!FastSerial");
    assert_eq!(d.next_event(), Ok(None));
    d.feed(b"ization.1");
    assert_eq!(d.next_event(), Ok(None));
    assert!(!d.ended());
    d.feed(&[TAG_NULL]);
    assert_eq!(d.next_event(), Ok(None));
    assert!(d.ended());
}

/// Decodes a whole fixture, fed in pieces of `step` bytes.
fn decode_all(bytes: &[u8], step: usize) -> (Decoder, Vec<Event>) {
    let mut d = Decoder::new();
    let mut events = Vec::new();
    for chunk in bytes.chunks(step) {
        d.feed(chunk);
        while let Some(e) = d.next_event().unwrap() {
            events.push(e);
        }
    }
    (d, events)
}

/// Recorded here from the sample app (`App.dll burst 100`) with
/// `Tracecar-Sample` and the `gc` preset, then rundown.
const BURST: &[u8] = include_bytes!("../../../tests/fixtures/dotnet/burst.nettrace");
/// Recorded from `App.dll spin` with the `cpu-sampling` providers.
const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/dotnet/sample.nettrace");

#[test]
fn the_sample_apps_events_decode_with_their_values() {
    let (d, events) = decode_all(BURST, 1 << 20);
    assert!(d.ended());
    assert_eq!(d.pending(), 0);
    assert_eq!(d.dropped(), 0);
    let trace = d.trace().unwrap();
    assert_eq!((trace.frequency, trace.pointer_size), (1_000_000_000, 8));
    let requests: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.provider == "Tracecar-Sample" && e.metadata.name == "Request")
        .map(|e| metadata::decode(e.metadata.fields.as_deref().unwrap(), &e.payload).unwrap())
        .collect();
    assert_eq!(requests.len(), 100);
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r["Id"], i as i64);
        assert_eq!(r["Name"], format!("req-{i}"));
        assert_eq!(r["Value"], i as i64 * 1_000_000_007);
    }
    let gc_starts = events
        .iter()
        .filter(|e| e.metadata.name == "GCStart")
        .count();
    assert_eq!(gc_starts, 2, "two GC.Collect()");
    // Rundown names methods with their addresses.
    let methods: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.name == "MethodDCEndVerbose")
        .map(|e| metadata::decode(e.metadata.fields.as_deref().unwrap(), &e.payload).unwrap())
        .collect();
    assert!(methods.len() > 100, "{}", methods.len());
    assert!(
        methods
            .iter()
            .any(|m| m["MethodNamespace"] == "Tracecar.Sample.Work"
                && m["MethodName"] == "Burst"
                && m["MethodStartAddress"].as_u64().unwrap() > 0)
    );
}

#[test]
fn any_split_of_the_stream_decodes_the_same() {
    let (_, whole) = decode_all(BURST, 1 << 20);
    for step in [1, 7, 4096] {
        let (d, pieces) = decode_all(BURST, step);
        assert!(d.ended());
        assert_eq!(pieces, whole, "step {step}");
    }
}

#[test]
fn sample_profiler_events_carry_stacks() {
    let (d, events) = decode_all(SAMPLE, 65536);
    assert!(d.ended());
    let samples: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.provider == "Microsoft-DotNETCore-SampleProfiler")
        .collect();
    assert!(samples.len() > 100, "{}", samples.len());
    assert!(samples.iter().all(|s| !s.stack.is_empty()));
}

#[test]
fn a_stream_cut_short_yields_the_events_before_the_cut() {
    let (_, whole) = decode_all(BURST, 1 << 20);
    let (d, cut) = decode_all(&BURST[..BURST.len() / 2], 1 << 20);
    assert!(!d.ended());
    assert!(d.pending() > 0);
    assert!(!cut.is_empty() && cut.len() < whole.len());
    assert_eq!(&whole[..cut.len()], &cut[..]);
}

#[test]
fn corruption_is_an_error_not_a_panic() {
    for at in (40..BURST.len()).step_by(997) {
        let mut bytes = BURST.to_vec();
        bytes[at] ^= 0xff;
        let mut d = Decoder::new();
        d.feed(&bytes);
        // Either decodes (a payload byte) or fails cleanly.
        while let Ok(Some(_)) = d.next_event() {}
    }
}
