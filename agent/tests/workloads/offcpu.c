/* Threads that spend known shares of their time on and off the CPU, for
 * mode=offcpu and mode=wall:
 *   busy      spins in busy_loop()                          100 % on-CPU
 *   sleeper   nanosleep 5 ms in sleep_loop()                 ~0 % on-CPU
 *   holder    holds the mutex, sleeping, in hold_loop()      ~0 % on-CPU
 *   waiter    blocks on that mutex in wait_loop()         ~90 % blocked
 *   feeder    writes a byte to a pipe every 5 ms
 *   reader    blocks in read() on that pipe in read_loop()  ~0 % on-CPU
 *   stuck     blocks in read() on a pipe nobody writes, in stuck_forever(),
 *             from before any capture until the process ends
 * The waiter takes and drops the lock in a loop: it runs while the holder
 * sleeps 1 ms between its 9 ms holds and blocks during the holds, so it
 * is about 10 % on-CPU and 90 % blocked on the mutex.
 *
 * Built with -DINLINE_SYSCALLS, the blocking calls are `syscall`
 * instructions in this file's own functions and the mutex is a futex
 * word, so that a frame-pointer build has frame pointers all the way from
 * the kernel entry (Debian's libc has none). Without it, libc's
 * nanosleep, pthread_mutex_lock and read are used (the DWARF build).
 *
 * Exits after argv[1] seconds (default: never). Prints "ready" when every
 * thread runs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#define NOINLINE __attribute__((noinline))

#ifdef INLINE_SYSCALLS
static inline long sys3(long nr, long a, long b, long c) {
    long ret;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
static inline long sys4(long nr, long a, long b, long c, long d) {
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
static void nap(long ns) {
    struct timespec ts = {0, ns};
    sys3(SYS_nanosleep, (long)&ts, 0, 0);
}
static long pipe_read(int fd, char *c) { return sys3(SYS_read, fd, (long)c, 1); }
/* A futex mutex: 0 free, 1 taken, 2 taken with waiters. */
static atomic_int lock_word;
static void lock(void) {
    int c = 0;
    if (atomic_compare_exchange_strong(&lock_word, &c, 1)) return;
    if (c != 2) c = atomic_exchange(&lock_word, 2);
    while (c != 0) {
        sys4(SYS_futex, (long)&lock_word, FUTEX_WAIT_PRIVATE, 2, 0);
        c = atomic_exchange(&lock_word, 2);
    }
}
static void unlock(void) {
    if (atomic_exchange(&lock_word, 0) == 2)
        sys4(SYS_futex, (long)&lock_word, FUTEX_WAKE_PRIVATE, 1, 0);
}
#else
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static void nap(long ns) {
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}
static long pipe_read(int fd, char *c) { return read(fd, c, 1); }
static void lock(void) { pthread_mutex_lock(&mutex); }
static void unlock(void) { pthread_mutex_unlock(&mutex); }
#endif

static volatile unsigned long sink;
static int feed[2], never[2];
static atomic_int started;

NOINLINE void busy_loop(void) {
    for (;;)
        for (int i = 0; i < 1000; i++) sink += i;
}

NOINLINE void sleep_loop(void) {
    for (;;) nap(5 * 1000 * 1000);
}

NOINLINE void hold_loop(void) {
    for (;;) {
        lock();
        nap(9 * 1000 * 1000);
        unlock();
        nap(1 * 1000 * 1000);
    }
}

NOINLINE void wait_loop(void) {
    for (;;) {
        lock();
        unlock();
        for (volatile int i = 0; i < 2000; i++) sink += i;
    }
}

NOINLINE void feed_loop(void) {
    for (;;) {
        nap(5 * 1000 * 1000);
        if (write(feed[1], "x", 1) != 1) exit(3);
    }
}

NOINLINE void read_loop(void) {
    char c;
    for (;;)
        if (pipe_read(feed[0], &c) != 1) exit(4);
}

NOINLINE void stuck_forever(void) {
    char c;
    pipe_read(never[0], &c);
    exit(5);
}

static void *run(void *arg) {
    void (*loop)(void) = (void (*)(void))((void **)arg)[0];
    pthread_setname_np(pthread_self(), (const char *)((void **)arg)[1]);
    atomic_fetch_add(&started, 1);
    loop();
    return NULL;
}

int main(int argc, char **argv) {
    if (pipe(feed) || pipe(never)) return 2;
    static void *threads[][2] = {
        {(void *)busy_loop, "busy"},     {(void *)sleep_loop, "sleeper"},
        {(void *)hold_loop, "holder"},   {(void *)wait_loop, "waiter"},
        {(void *)feed_loop, "feeder"},   {(void *)read_loop, "reader"},
        {(void *)stuck_forever, "stuck"},
    };
    int n = sizeof threads / sizeof threads[0];
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, threads[i])) return 1;
    }
    while (atomic_load(&started) < n) nap(1000 * 1000);
    printf("ready\n");
    fflush(stdout);
    if (argc > 1) {
        sleep((unsigned)atoi(argv[1]));
        exit(0);
    }
    for (;;) pause();
}
