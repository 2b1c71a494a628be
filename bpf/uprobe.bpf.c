// SPDX-License-Identifier: GPL-2.0
/* tracecar probe programs: capture arguments on entry, pair each return
 * with its own entry (by thread and stack pointer, so recursion, threads
 * and exceptions that skip a return cannot shift the pairing), record the
 * user stack, and send one variable-size record per call through a ring
 * buffer. The same core runs behind uprobes/uretprobes (file-backed code)
 * and behind per-CPU hardware execute breakpoints (perf_event programs,
 * for JIT code in anonymous memory), which filter by the target's PID.
 * Built by agent/build.rs with clang-19. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "events.h"

char LICENSE[] SEC("license") = "GPL";

/* Sized by the agent at load time (set_max_entries). */
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 24);
} EVENTS SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct tracecar_config);
} CONFIG SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, TRACECAR_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} COUNTERS SEC(".maps");

/* Entries waiting for their return, by thread and the stack pointer at
 * entry (which points at the return address: the same word a ret
 * instruction pops). Least recently used entries make room, so a thread
 * that never returns cannot fill it. */
struct pending_key {
    __u64 sp;
    __u32 tid;
    __u32 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct pending_key);
    __type(value, struct tracecar_pending);
} PENDING SEC(".maps");

/* Rate limit state per CPU: start of the current one-second window, and
 * calls recorded in it. */
struct rate_window {
    __u64 start_ns;
    __u64 recorded;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct rate_window);
} RATE SEC(".maps");

/* Where a record is built: larger than the BPF stack allows. */
struct record {
    __u8 bytes[TRACECAR_RECORD_BYTES];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct record);
} SCRATCH SEC(".maps");

#define HEAD_BYTES sizeof(struct tracecar_event)
#define FRAME_BYTES (TRACECAR_MAX_FRAMES * 8)

static __always_inline void count(__u32 which)
{
    __u64 *c = bpf_map_lookup_elem(&COUNTERS, &which);
    if (c)
        __sync_fetch_and_add(c, 1);
}

/* The registers a capture can name, read at fixed offsets (the verifier
 * refuses computed offsets into the context). */
static __always_inline void read_regs(__u64 *r, struct pt_regs *regs)
{
    r[TRACECAR_REG_RDI] = regs->rdi;
    r[TRACECAR_REG_RSI] = regs->rsi;
    r[TRACECAR_REG_RDX] = regs->rdx;
    r[TRACECAR_REG_RCX] = regs->rcx;
    r[TRACECAR_REG_R8] = regs->r8;
    r[TRACECAR_REG_R9] = regs->r9;
    r[TRACECAR_REG_RAX] = regs->rax;
    r[TRACECAR_REG_RBX] = regs->rbx;
    r[TRACECAR_REG_RBP] = regs->rbp;
    r[TRACECAR_REG_RSP] = regs->rsp;
    r[TRACECAR_REG_R10] = regs->r10;
    r[TRACECAR_REG_R11] = regs->r11;
    r[TRACECAR_REG_R12] = regs->r12;
    r[TRACECAR_REG_R13] = regs->r13;
    r[TRACECAR_REG_R14] = regs->r14;
    r[TRACECAR_REG_R15] = regs->r15;
    r[TRACECAR_REG_RIP] = regs->rip;
}

/* The calling process in the agent's PID namespace, or 0 when it is not
 * in it. */
static __always_inline int identify(const struct tracecar_config *cfg, __u32 *pid, __u32 *tid)
{
    struct bpf_pidns_info ns = {};
    if (cfg->pidns_ino &&
        bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)) == 0) {
        *pid = ns.tgid;
        *tid = ns.pid;
        return 0;
    }
    if (cfg->pidns_ino)
        return -1;
    __u64 id = bpf_get_current_pid_tgid();
    *pid = id >> 32;
    *tid = (__u32)id;
    return 0;
}

/* Capture `i` into the record's data area. */
static __always_inline void capture(__u8 *data, __u64 *values, const struct tracecar_capture *c,
                                    const __u64 *regs, int i)
{
    __u32 r = c->reg;
    if (c->kind == TRACECAR_CAPTURE_NONE || r >= TRACECAR_REGS)
        return;
    __u64 value = regs[r];
    values[i] = value;
    if (c->kind != TRACECAR_CAPTURE_DEREF && c->kind != TRACECAR_CAPTURE_STR)
        return;
    __u32 len = c->len;
    __u32 at = c->at;
    if (len == 0 || len > TRACECAR_ARG_BYTES || at > TRACECAR_DATA_BYTES - TRACECAR_ARG_BYTES)
        return;
    void *src = (void *)(value + (__s64)c->offset);
    if (c->kind == TRACECAR_CAPTURE_DEREF) {
        if (bpf_probe_read_user(data + at, len, src) != 0) {
            /* The page after the value may not be there yet: a fresh
             * heap's pages are faulted in as they are first written (the
             * .NET GC does not clear memory it got zeroed from the OS),
             * and a read that crosses into one fails whole. Read what the
             * value's own page holds; the rest stays zero. */
            __u32 part = 4096 - (__u32)((__u64)src & 4095);
            if (part < len)
                bpf_probe_read_user(data + at, part & (TRACECAR_ARG_BYTES - 1), src);
        }
    } else
        bpf_probe_read_user_str(data + at, len, src);
}

/* Fills the stack part of a record at `buf` (head at 0, data after it)
 * and sends it. `ctx` is the program's own context, for bpf_get_stack. */
static __always_inline void emit(void *ctx, __u8 *buf, const struct tracecar_config *cfg,
                                 const __u64 *regs, __u32 site)
{
    struct tracecar_event *e = (struct tracecar_event *)buf;
    __u32 data = cfg->data_bytes;
    if (data > TRACECAR_DATA_BYTES)
        data = TRACECAR_DATA_BYTES;
    e->data_bytes = data;
    e->nframes = 0;
    e->stack_bytes = 0;
    __u64 size = HEAD_BYTES + data;
    e->flags |= site;
    e->ip = regs[TRACECAR_REG_RIP];
    e->sp = regs[TRACECAR_REG_RSP];
    e->bp = regs[TRACECAR_REG_RBP];
    e->top = 0;
    if (cfg->flags & TRACECAR_FLAG_STACK) {
        bpf_probe_read_user(&e->top, sizeof(e->top), (void *)e->sp);
        __u64 off = size;
        if (off > HEAD_BYTES + TRACECAR_DATA_BYTES)
            return;
        long n = bpf_get_stack(ctx, buf + off, FRAME_BYTES, BPF_F_USER_STACK);
        if (n > 0 && n <= FRAME_BYTES) {
            e->nframes = n / 8;
            off += (n / 8) * 8;
        }
        /* The stack copy, page by page from sp up: the last readable page
         * of the stack ends the copy, whatever its length. */
        __u64 sp = e->sp;
        __u32 copied = 0;
        __u32 want = cfg->stack_bytes;
        if (want > TRACECAR_STACK_BYTES)
            want = TRACECAR_STACK_BYTES;
        if (want && off <= HEAD_BYTES + TRACECAR_DATA_BYTES + FRAME_BYTES) {
            __u32 first = 4096 - (sp & 4095);
            if (bpf_probe_read_user(buf + off, first, (void *)sp) == 0) {
                copied = first;
#pragma unroll
                for (int page = 0; page < TRACECAR_STACK_BYTES / 4096 - 1; page++) {
                    if (copied >= want)
                        break;
                    __u64 at = off + copied;
                    if (at > TRACECAR_RECORD_BYTES - 4096)
                        break;
                    if (bpf_probe_read_user(buf + at, 4096, (void *)(sp + copied)) != 0)
                        break;
                    copied += 4096;
                }
            }
        }
        e->stack_bytes = copied;
        size = off + copied;
    }
    if (size < HEAD_BYTES || size > TRACECAR_RECORD_BYTES)
        return;
    /* The agent polls on a timer, so the producer never pays for a
     * wake-up. */
    if (bpf_ringbuf_output(&EVENTS, buf, size, BPF_RB_NO_WAKEUP) != 0)
        count(TRACECAR_COUNT_LOST);
}

/* Entry (a uprobe, or an execute breakpoint on the first instruction). */
/* What every program starts with: the configuration, the record buffer,
 * and the caller, if it is the target (breakpoints fire for every process
 * that runs the address). Non-zero: not for us. */
static __always_inline int begin(const struct tracecar_config **cfg, __u8 **buf, __u32 *pid,
                                 __u32 *tid)
{
    __u32 zero = 0;
    *cfg = bpf_map_lookup_elem(&CONFIG, &zero);
    *buf = bpf_map_lookup_elem(&SCRATCH, &zero);
    if (!*cfg || !*buf)
        return -1;
    if (identify(*cfg, pid, tid) != 0)
        return -1;
    if ((*cfg)->pid && *pid != (*cfg)->pid)
        return -1;
    return 0;
}

static __always_inline int on_entry(void *ctx, struct pt_regs *pt)
{
    __u32 zero = 0;
    const struct tracecar_config *cfg;
    __u8 *buf;
    __u32 pid, tid;
    if (begin(&cfg, &buf, &pid, &tid) != 0)
        return 0;
    count(TRACECAR_COUNT_CALLS);
    if (cfg->max_per_cpu_per_sec) {
        /* Protect the target: past the budget, calls are only counted. */
        struct rate_window *w = bpf_map_lookup_elem(&RATE, &zero);
        if (!w)
            return 0;
        __u64 now = bpf_ktime_get_ns();
        if (now - w->start_ns >= 1000000000ull) {
            w->start_ns = now;
            w->recorded = 0;
        }
        if (w->recorded >= cfg->max_per_cpu_per_sec) {
            count(TRACECAR_COUNT_THROTTLED);
            return 0;
        }
        w->recorded++;
    }
    struct tracecar_event *e = (struct tracecar_event *)buf;
    __builtin_memset(e, 0, sizeof(*e));
    __u64 regs[TRACECAR_REGS];
    read_regs(regs, pt);
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = pid;
    e->tid = tid;
    e->nargs = cfg->nargs;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
#pragma unroll
    for (int i = 0; i < TRACECAR_MAX_ARGS; i++) {
        if (i < cfg->nargs)
            capture(buf + HEAD_BYTES, e->values, &cfg->captures[i], regs, i);
    }
    if (!(cfg->flags & TRACECAR_FLAG_PAIRED)) {
        emit(ctx, buf, cfg, regs, TRACECAR_EVENT_FRAMELESS);
        return 0;
    }
    struct pending_key key = {.sp = regs[TRACECAR_REG_RSP], .tid = tid};
    bpf_map_update_elem(&PENDING, &key, buf, BPF_ANY);
    return 0;
}

/* Return: `sp_at_entry` is where the stack pointer was at entry (a
 * uretprobe runs after the ret popped the return address: sp - 8; a
 * breakpoint on a ret instruction: sp). */
static __always_inline int on_return(void *ctx, struct pt_regs *pt, __u32 site)
{
    const struct tracecar_config *cfg;
    __u8 *buf;
    __u32 pid, tid;
    if (begin(&cfg, &buf, &pid, &tid) != 0)
        return 0;
    __u64 regs[TRACECAR_REGS];
    read_regs(regs, pt);
    __u64 sp = regs[TRACECAR_REG_RSP];
    if (site == TRACECAR_EVENT_AFTER_RETURN)
        sp -= 8;
    struct pending_key key = {.sp = sp, .tid = tid};
    struct tracecar_pending *entry = bpf_map_lookup_elem(&PENDING, &key);
    if (!entry) {
        /* Entered before the probe was attached, throttled, or made
         * room for. */
        count(TRACECAR_COUNT_UNPAIRED);
        return 0;
    }
    /* Too large for an inlined copy. */
    if (bpf_probe_read_kernel(buf, sizeof(*entry), entry) != 0)
        return 0;
    bpf_map_delete_elem(&PENDING, &key);
    struct tracecar_event *e = (struct tracecar_event *)buf;
    e->latency_ns = bpf_ktime_get_ns() - e->ts_ns;
    e->ret = regs[TRACECAR_REG_RAX];
    e->flags |= TRACECAR_EVENT_HAS_RETURN;
    capture(buf + HEAD_BYTES, e->values, &cfg->captures[TRACECAR_RET_CAPTURE], regs,
            TRACECAR_RET_CAPTURE);
    emit(ctx, buf, cfg, regs, site);
    return 0;
}

SEC("uprobe")
int tracecar_entry(struct pt_regs *ctx)
{
    return on_entry(ctx, ctx);
}

SEC("uretprobe")
int tracecar_return(struct pt_regs *ctx)
{
    return on_return(ctx, ctx, TRACECAR_EVENT_AFTER_RETURN);
}

/* An execute breakpoint on a function's first instruction. */
SEC("perf_event")
int tracecar_bp_entry(struct bpf_perf_event_data *ctx)
{
    return on_entry(ctx, (struct pt_regs *)&ctx->regs);
}

/* An execute breakpoint on one of a function's ret instructions. */
SEC("perf_event")
int tracecar_bp_return(struct bpf_perf_event_data *ctx)
{
    return on_return(ctx, (struct pt_regs *)&ctx->regs, TRACECAR_EVENT_FRAMELESS);
}
