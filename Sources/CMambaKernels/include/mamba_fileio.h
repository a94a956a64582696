#ifndef MAMBA_FILEIO_H
#define MAMBA_FILEIO_H

/// copy_file_range(fd_in, NULL, fd_out, NULL, len, 0): bytes copied, or -1 with errno set.
long mq_copy_file_range(int fd_in, int fd_out, unsigned long len);

/// Installs SIGINT and SIGTERM handlers (sigaction, synchronously) that write the signal number
/// as one byte to a pipe; returns the pipe's read end (the same one on later calls), -1 on failure.
int mq_install_interrupt_pipe(void);

#endif
