// SPDX-License-Identifier: GPL-2.0
/* tracecar uprobe programs: capture arguments on entry, pair with the
 * return under recursion and across threads, and send one event per call
 * through a ring buffer. Built by agent/build.rs with clang-19. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "events.h"

char LICENSE[] SEC("license") = "GPL";

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

/* Counters: 0 = calls seen, 1 = events lost (ring buffer full),
 * 2 = calls dropped by the rate limit. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} COUNTERS SEC(".maps");

/* Per-thread call depth, and the pending entry at each depth: this is what
 * pairs a return with its own entry when a function recurses. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u32);
} DEPTH SEC(".maps");

struct pending_key {
    __u32 tid;
    __u32 depth;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct pending_key);
    __type(value, struct tracecar_event);
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

/* Scratch space: events are too large for the BPF stack. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct tracecar_event);
} SCRATCH SEC(".maps");

static __always_inline void count(__u32 which)
{
    __u64 *c = bpf_map_lookup_elem(&COUNTERS, &which);
    if (c)
        __sync_fetch_and_add(c, 1);
}

static __always_inline void fill_identity(struct tracecar_event *e, const struct tracecar_config *cfg)
{
    struct bpf_pidns_info ns = {};
    if (cfg->pidns_ino &&
        bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)) == 0) {
        e->pid = ns.tgid;
        e->tid = ns.pid;
    } else {
        __u64 id = bpf_get_current_pid_tgid();
        e->pid = id >> 32;
        e->tid = (__u32)id;
    }
    bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline void capture_args(struct pt_regs *ctx, struct tracecar_event *e,
                                         const struct tracecar_config *cfg)
{
    /* Every argument register, loaded directly: the verifier refuses
     * computed offsets into the context. x86-64 SysV order. */
    e->regs[0] = PT_REGS_PARM1(ctx);
    e->regs[1] = PT_REGS_PARM2(ctx);
    e->regs[2] = PT_REGS_PARM3(ctx);
    e->regs[3] = PT_REGS_PARM4(ctx);
    e->regs[4] = PT_REGS_PARM5(ctx);
    e->regs[5] = ctx->r9;
    e->nargs = cfg->nargs;
#pragma unroll
    for (int i = 0; i < TRACECAR_MAX_ARGS; i++) {
        const struct tracecar_capture *c = &cfg->args[i];
        if (i >= cfg->nargs || c->reg >= TRACECAR_MAX_ARGS)
            continue;
        if (c->kind != TRACECAR_CAPTURE_DEREF && c->kind != TRACECAR_CAPTURE_STR)
            continue;
        __u32 len = c->len;
        if (len > TRACECAR_ARG_BYTES)
            len = TRACECAR_ARG_BYTES;
        if (len == 0)
            continue;
        void *src = (void *)(e->regs[c->reg] + (__s64)c->offset);
        if (c->kind == TRACECAR_CAPTURE_DEREF)
            bpf_probe_read_user(e->data[i], len, src);
        else
            bpf_probe_read_user_str(e->data[i], len, src);
    }
}

static __always_inline void emit(const struct tracecar_event *e)
{
    struct tracecar_event *out = bpf_ringbuf_reserve(&EVENTS, sizeof(*out), 0);
    if (!out) {
        count(1);
        return;
    }
    __builtin_memcpy(out, e, sizeof(*out));
    bpf_ringbuf_submit(out, 0);
}

SEC("uprobe")
int tracecar_entry(struct pt_regs *ctx)
{
    __u32 zero = 0;
    const struct tracecar_config *cfg = bpf_map_lookup_elem(&CONFIG, &zero);
    struct tracecar_event *e = bpf_map_lookup_elem(&SCRATCH, &zero);
    if (!cfg || !e)
        return 0;
    count(0);
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
            count(2);
            return 0;
        }
        w->recorded++;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts_ns = bpf_ktime_get_ns();
    fill_identity(e, cfg);
    capture_args(ctx, e, cfg);
    if (!(cfg->flags & TRACECAR_FLAG_PAIRED)) {
        emit(e);
        return 0;
    }
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    __u32 depth = 0, *d = bpf_map_lookup_elem(&DEPTH, &tid);
    if (d)
        depth = *d;
    struct pending_key key = {.tid = tid, .depth = depth};
    bpf_map_update_elem(&PENDING, &key, e, BPF_ANY);
    depth++;
    bpf_map_update_elem(&DEPTH, &tid, &depth, BPF_ANY);
    return 0;
}

SEC("uretprobe")
int tracecar_return(struct pt_regs *ctx)
{
    __u32 zero = 0;
    struct tracecar_event *e = bpf_map_lookup_elem(&SCRATCH, &zero);
    if (!e)
        return 0;
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    __u32 *d = bpf_map_lookup_elem(&DEPTH, &tid);
    if (!d || *d == 0)
        return 0; /* the entry happened before we attached */
    __u32 depth = *d - 1;
    if (depth == 0)
        bpf_map_delete_elem(&DEPTH, &tid);
    else
        bpf_map_update_elem(&DEPTH, &tid, &depth, BPF_ANY);
    struct pending_key key = {.tid = tid, .depth = depth};
    struct tracecar_event *entry = bpf_map_lookup_elem(&PENDING, &key);
    if (!entry)
        return 0;
    __builtin_memcpy(e, entry, sizeof(*e));
    bpf_map_delete_elem(&PENDING, &key);
    e->latency_ns = bpf_ktime_get_ns() - e->ts_ns;
    e->ret = PT_REGS_RC(ctx);
    e->flags |= TRACECAR_EVENT_HAS_RETURN;
    emit(e);
    return 0;
}
