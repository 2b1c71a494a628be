/* Event layouts shared by the BPF programs and the agent. The Rust mirror
 * is agent/src/uprobe/events.rs; its tests check sizes and offsets, so a
 * change here that is not made there fails the build's tests. */
#ifndef TRACECAR_EVENTS_H
#define TRACECAR_EVENTS_H

#define TRACECAR_MAX_ARGS 6
#define TRACECAR_ARG_BYTES 128

/* How to capture one argument (or the return value). */
enum tracecar_capture_kind {
    TRACECAR_CAPTURE_NONE = 0,
    TRACECAR_CAPTURE_REG = 1,   /* the register value itself */
    TRACECAR_CAPTURE_DEREF = 2, /* `len` bytes at register + offset */
    TRACECAR_CAPTURE_STR = 3,   /* a NUL-terminated string at register + offset, up to `len` */
};

struct tracecar_capture {
    __u8 kind;    /* enum tracecar_capture_kind */
    __u8 reg;     /* argument index 0..5 */
    __u16 len;    /* bytes to read for DEREF/STR, at most TRACECAR_ARG_BYTES */
    __s32 offset; /* added to the register value before reading */
};

/* Per-probe configuration, written by the agent before attaching. */
struct tracecar_config {
    __u64 pidns_dev;  /* the agent's PID namespace, to report pod PIDs */
    __u64 pidns_ino;
    __u32 nargs;
    __u32 flags;      /* bit 0: pair entries with returns (uretprobe attached) */
    struct tracecar_capture args[TRACECAR_MAX_ARGS];
    __u64 max_per_cpu_per_sec; /* calls recorded per CPU per second; 0: no limit */
};

#define TRACECAR_FLAG_PAIRED 1u

/* One call, sent through the ring buffer: on entry when only a uprobe is
 * attached, on return (with the entry's arguments) when both are. */
struct tracecar_event {
    __u64 ts_ns;       /* bpf_ktime_get_ns() at entry */
    __u64 latency_ns;  /* return ts - entry ts; 0 without a uretprobe */
    __u64 ret;         /* return value register; 0 without a uretprobe */
    __u32 pid;         /* in the agent's PID namespace */
    __u32 tid;
    __u32 flags;       /* bit 0: has return; bit 1: entry was lost */
    __u32 nargs;
    char comm[16];
    __u64 regs[TRACECAR_MAX_ARGS];                 /* argument registers 0..5 */
    __u8 data[TRACECAR_MAX_ARGS][TRACECAR_ARG_BYTES]; /* DEREF/STR capture i */
};

#define TRACECAR_EVENT_HAS_RETURN 1u
#define TRACECAR_EVENT_ENTRY_MISSING 2u

#endif
