#ifndef MAMBA_FILEIO_H
#define MAMBA_FILEIO_H

/// copy_file_range(fd_in, NULL, fd_out, NULL, len, 0): bytes copied, or -1 with errno set.
long mq_copy_file_range(int fd_in, int fd_out, unsigned long len);

/// fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, len): `len` bytes (a multiple of the file system's
/// block size, less than the file's size) inserted as a hole before the file's first byte; 0, or
/// -1 with errno set (EOPNOTSUPP where the file system cannot, EINVAL for a length it refuses).
int mq_insert_range_at_start(int fd, long long len);

/// Installs SIGINT and SIGTERM handlers (sigaction, synchronously) that write the signal number
/// as one byte to a pipe; returns the pipe's read end (the same one on later calls), -1 on failure.
int mq_install_interrupt_pipe(void);

#include <stddef.h>
/// Records a read-only mapping of `path`: a SIGBUS inside it (the file truncated or rewritten
/// while mapped) prints one line naming the file and exits with status 1, instead of a core dump.
void mq_register_mapping(const void *base, size_t length, const char *path);
/// Forgets the mapping at `base` (before munmap).
void mq_unregister_mapping(const void *base);

/// glibc's malloc keeps large blocks on its heap and freed memory for reuse (SystemMemory.
/// keepFreedMemoryForReuse says why).
void mq_keep_freed_memory(void);

#endif
