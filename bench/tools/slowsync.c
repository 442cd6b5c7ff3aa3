/* A slower disk, for the write benchmark: every fsync and fdatasync first sleeps SLOWSYNC_US
 * microseconds (3000 by default). Preloaded into PostgreSQL, it stands in for a disk whose flush
 * is slow, whatever the machine's own disk does (BENCHMARKS.md, issue 17):
 *
 *   gcc -shared -fPIC -O2 -o /tmp/slowsync.so bench/tools/slowsync.c -ldl
 *   LD_PRELOAD=/tmp/slowsync.so SLOWSYNC_US=3000 bench/cluster.sh --writes ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static useconds_t delay(void) {
    const char *us = getenv("SLOWSYNC_US");
    return us ? (useconds_t)atoi(us) : 3000;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    usleep(delay());
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    usleep(delay());
    return real(fd);
}
