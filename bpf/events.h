/* Event layouts shared by the BPF programs and the agent. The Rust mirror
 * is agent/src/uprobe/events.rs; its tests check sizes and offsets, so a
 * change here that is not made there fails the build's tests. */
#ifndef TRACECAR_EVENTS_H
#define TRACECAR_EVENTS_H

#define TRACECAR_MAX_ARGS 6
#define TRACECAR_ARG_BYTES 128
/* Capture slots: the arguments, then one for the return value. */
#define TRACECAR_CAPTURES (TRACECAR_MAX_ARGS + 1)
#define TRACECAR_RET_CAPTURE TRACECAR_MAX_ARGS
/* Bytes of captured memory in one record at most (every slot full). */
#define TRACECAR_DATA_BYTES (TRACECAR_CAPTURES * TRACECAR_ARG_BYTES)
/* Frame-pointer frames per user stack, as the kernel's default
 * kernel.perf_event_max_stack. */
#define TRACECAR_MAX_FRAMES 127
/* User stack bytes copied per record at most, for DWARF unwinding. */
#define TRACECAR_STACK_BYTES 16384
/* The per-CPU buffer a record is built in (a power of two). */
#define TRACECAR_RECORD_BYTES 32768

/* How to capture one value. */
enum tracecar_capture_kind {
    TRACECAR_CAPTURE_NONE = 0,
    TRACECAR_CAPTURE_REG = 1,   /* the register value itself */
    TRACECAR_CAPTURE_DEREF = 2, /* `len` bytes at register + offset */
    TRACECAR_CAPTURE_STR = 3,   /* a NUL-terminated string at register + offset, up to `len` */
};

/* Registers a capture can name: the SysV argument registers first, so
 * that argument N is register N. */
enum tracecar_reg {
    TRACECAR_REG_RDI = 0,
    TRACECAR_REG_RSI,
    TRACECAR_REG_RDX,
    TRACECAR_REG_RCX,
    TRACECAR_REG_R8,
    TRACECAR_REG_R9,
    TRACECAR_REG_RAX,
    TRACECAR_REG_RBX,
    TRACECAR_REG_RBP,
    TRACECAR_REG_RSP,
    TRACECAR_REG_R10,
    TRACECAR_REG_R11,
    TRACECAR_REG_R12,
    TRACECAR_REG_R13,
    TRACECAR_REG_R14,
    TRACECAR_REG_R15,
    TRACECAR_REG_RIP,
    TRACECAR_REGS,
};

struct tracecar_capture {
    __u8 kind;    /* enum tracecar_capture_kind */
    __u8 reg;     /* enum tracecar_reg */
    __u16 len;    /* bytes to read for DEREF/STR, at most TRACECAR_ARG_BYTES */
    __s32 offset; /* added to the register value before reading */
    __u16 at;     /* where the bytes go in the record's data */
    __u16 pad;
};

/* Per-probe configuration, written by the agent before attaching. */
struct tracecar_config {
    __u64 pidns_dev;  /* the agent's PID namespace, to report pod PIDs */
    __u64 pidns_ino;
    __u32 nargs;
    __u32 flags;      /* TRACECAR_FLAG_* */
    /* Captures 0..nargs-1 on entry; TRACECAR_RET_CAPTURE on return. */
    struct tracecar_capture captures[TRACECAR_CAPTURES];
    __u64 max_per_cpu_per_sec; /* calls recorded per CPU per second; 0: no limit */
    __u32 pid;         /* only this process (pod PID); 0: any */
    __u32 data_bytes;  /* bytes of captured memory per record */
    __u32 stack_bytes; /* user stack bytes to copy per record; 0: none */
    __u32 pad;
};

/* Pair entries with returns: events are sent on return. */
#define TRACECAR_FLAG_PAIRED 1u
/* Record the user frame-pointer chain with each event. */
#define TRACECAR_FLAG_STACK 2u

/* The fixed head of a record in the ring buffer. Records are variable:
 * the head, `data_bytes` of captured memory, `nframes` 8-byte frames of
 * the frame-pointer chain, then `stack_bytes` of user stack copy. One
 * record per call: on entry when only an entry probe is attached, on
 * return (with the entry's arguments) when both are. */
struct tracecar_event {
    __u64 ts_ns;       /* bpf_ktime_get_ns() at entry */
    __u64 latency_ns;  /* return ts - entry ts; 0 without a return probe */
    __u64 ret;         /* the return value register (rax) */
    __u64 ip;          /* where the stack was taken: entry, ret instruction or return address */
    __u64 sp;          /* its stack pointer */
    __u64 bp;          /* its frame pointer */
    __u64 top;         /* the word at sp (the return address at an entry or ret) */
    __u64 values[TRACECAR_CAPTURES]; /* the register of each capture */
    __u32 pid;         /* in the agent's PID namespace */
    __u32 tid;
    __u32 flags;       /* TRACECAR_EVENT_* */
    __u16 nargs;
    __u16 nframes;     /* frames of the frame-pointer chain that follow the data */
    __u32 data_bytes;  /* captured memory that follows the head */
    __u32 stack_bytes; /* stack copy that follows the frames */
    char comm[16];
};

#define TRACECAR_EVENT_HAS_RETURN 1u
/* The stack was taken where the function has no frame (its entry, or a
 * ret instruction): the return address is `top`. */
#define TRACECAR_EVENT_FRAMELESS 2u
/* The stack was taken just after the function returned (a uretprobe). */
#define TRACECAR_EVENT_AFTER_RETURN 4u

/* An entry waiting for its return. */
struct tracecar_pending {
    struct tracecar_event head;
    __u8 data[TRACECAR_DATA_BYTES];
};

/* Counters (per CPU). */
#define TRACECAR_COUNT_CALLS 0     /* calls seen (of the target) */
#define TRACECAR_COUNT_LOST 1      /* records the ring buffer had no room for */
#define TRACECAR_COUNT_THROTTLED 2 /* calls over the rate limit */
#define TRACECAR_COUNT_UNPAIRED 3  /* returns whose entry was not recorded */
#define TRACECAR_COUNTERS 4

#endif
