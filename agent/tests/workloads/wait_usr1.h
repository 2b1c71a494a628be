/* Blocks until SIGUSR1: the LTTng tests start a recording, then signal the
 * workload, so that every event it emits lands in the session. */
#include <signal.h>

static void wait_for_sigusr1(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
}
