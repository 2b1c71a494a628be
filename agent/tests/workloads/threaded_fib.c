/* Two threads calling a recursive fib() at the same time, so entries and
 * returns of different threads interleave. */
#include <pthread.h>
#include <unistd.h>
__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
volatile int sink;
static void *worker(void *arg) {
    int offset = (int)(long)arg;
    for (int i = 0;; i++) {
        sink += fib((i + offset) % 12);
        usleep(500);
    }
    return 0;
}
int main(void) {
    pthread_t a, b;
    pthread_create(&a, 0, worker, (void *)0L);
    pthread_create(&b, 0, worker, (void *)5L);
    pthread_join(a, 0);
    return 0;
}
