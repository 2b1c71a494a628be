/* Two named worker threads spinning in different functions; the main
 * thread sleeps. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>
volatile uint64_t sink;
__attribute__((noinline)) void spin_in_worker_one(void) { for (;;) sink++; }
__attribute__((noinline)) void spin_in_worker_two(void) { for (;;) sink += 2; }
static void *one(void *arg) { (void)arg; pthread_setname_np(pthread_self(), "worker-one"); spin_in_worker_one(); return 0; }
static void *two(void *arg) { (void)arg; pthread_setname_np(pthread_self(), "worker-two"); spin_in_worker_two(); return 0; }
int main(void) {
    sleep(1); /* the threads start after the capture has begun */
    pthread_t a, b;
    pthread_create(&a, 0, one, 0);
    pthread_create(&b, 0, two, 0);
    for (;;) pause();
}
