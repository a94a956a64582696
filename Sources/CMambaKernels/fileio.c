// copy_file_range(2) needs _GNU_SOURCE, which Swift's Glibc module does not define: this wrapper
// lets the checkpoint writer move shard data from file to file inside the kernel.
#define _GNU_SOURCE
#include <unistd.h>
#include "mamba_fileio.h"

long mq_copy_file_range(int fd_in, int fd_out, unsigned long len) {
    return (long)copy_file_range(fd_in, NULL, fd_out, NULL, (size_t)len, 0);
}

// fallocate(2)'s FALLOC_FL_INSERT_RANGE (ext4, XFS): room for a shard's header in front of data
// already on disk, by shifting the file's extents instead of copying its bytes.
#include <fcntl.h>
#include <linux/falloc.h>

int mq_insert_range_at_start(int fd, long long len) {
    return fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, (off_t)len);
}

// SIGINT/SIGTERM to a pipe (the self-pipe trick): the handler only write(2)s the signal number,
// which is async-signal-safe, and is installed by sigaction before this returns, so no signal
// arriving afterwards is lost. A thread reading the pipe does the cleanup.
#include <signal.h>
#include <string.h>

static int interrupt_pipe[2] = {-1, -1};

static void on_interrupt(int sig) {
    unsigned char b = (unsigned char)sig;
    ssize_t ignored = write(interrupt_pipe[1], &b, 1);
    (void)ignored;
}

int mq_install_interrupt_pipe(void) {
    if (interrupt_pipe[0] >= 0) return interrupt_pipe[0];
    if (pipe(interrupt_pipe) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return interrupt_pipe[0];
}

// SIGBUS on a mapped input (a checkpoint truncated or rewritten while it is read) names the file
// instead of dumping core: mappings are registered with their paths, and the handler (SA_SIGINFO)
// finds the one holding the faulting address. Only async-signal-safe calls run in the handler.
#include <pthread.h>
#include <stdlib.h>

#define MQ_MAX_MAPPINGS 4096
typedef struct { const char *base; size_t length; char *message; size_t message_length; } mq_mapping;
static mq_mapping mappings[MQ_MAX_MAPPINGS];
static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_all(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w; n -= (size_t)w;
    }
}

static void on_bus_error(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)context;
    const char *addr = (const char *)info->si_addr;
    for (int i = 0; i < MQ_MAX_MAPPINGS; i++) {
        const mq_mapping *m = &mappings[i];
        if (m->message && addr >= m->base && addr < m->base + m->length) {
            write_all(m->message, m->message_length);
            _exit(1);
        }
    }
    static const char generic[] = "Error: bus error (SIGBUS) reading a mapped file: an input file changed or was truncated while it was read\n";
    write_all(generic, sizeof generic - 1);
    _exit(1);
}

void mq_register_mapping(const void *base, size_t length, const char *path) {
    static int installed = 0;
    pthread_mutex_lock(&mappings_lock);
    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_bus_error;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, NULL);
        installed = 1;
    }
    static const char prefix[] = "Error: ", suffix[] = " changed or was truncated while it was being read\n";
    size_t n = strlen(path), total = sizeof prefix - 1 + n + sizeof suffix - 1;
    char *message = malloc(total);
    if (message) {
        memcpy(message, prefix, sizeof prefix - 1);
        memcpy(message + sizeof prefix - 1, path, n);
        memcpy(message + sizeof prefix - 1 + n, suffix, sizeof suffix - 1);
        for (int i = 0; i < MQ_MAX_MAPPINGS; i++) {
            if (!mappings[i].message) {
                mappings[i].base = base;
                mappings[i].length = length;
                mappings[i].message_length = total;
                mappings[i].message = message;   // set last: the handler reads message first
                message = NULL;
                break;
            }
        }
        free(message);   // the table is full: the generic message covers it
    }
    pthread_mutex_unlock(&mappings_lock);
}

void mq_unregister_mapping(const void *base) {
    pthread_mutex_lock(&mappings_lock);
    for (int i = 0; i < MQ_MAX_MAPPINGS; i++) {
        if (mappings[i].message && mappings[i].base == base) {
            char *message = mappings[i].message;
            mappings[i].message = NULL;
            free(message);
            break;
        }
    }
    pthread_mutex_unlock(&mappings_lock);
}

// mallopt(3) is declared in <malloc.h>, which Swift's Glibc module does not import.
#include <limits.h>
#include <malloc.h>

void mq_keep_freed_memory(void) {
    mallopt(M_MMAP_MAX, 0);             // large blocks from the heap, not each its own mmap
    mallopt(M_TRIM_THRESHOLD, INT_MAX);  // and kept there when freed
}
