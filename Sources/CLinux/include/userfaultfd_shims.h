// userfaultfd(2) and sparse-file helpers for guest memory snapshots (userfaultfd.c).
//
// <linux/userfaultfd.h> defines its ioctl request numbers with the _IOWR/_IOR function-like
// macros and its 64-bit flags with casts, which Swift does not import; they are exported
// here as plain constants. `struct uffd_msg` is a packed structure with a union, so reading
// page-fault events is done in C and handed over as a plain structure.
#ifndef CLINUX_USERFAULTFD_SHIMS_H
#define CLINUX_USERFAULTFD_SHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <linux/userfaultfd.h>

/// The ioctl request number `UFFDIO_API`.
extern const unsigned long IOCTL_UFFDIO_API;
/// The ioctl request number `UFFDIO_REGISTER`.
extern const unsigned long IOCTL_UFFDIO_REGISTER;
/// The ioctl request number `UFFDIO_UNREGISTER`.
extern const unsigned long IOCTL_UFFDIO_UNREGISTER;
/// The ioctl request number `UFFDIO_WAKE`.
extern const unsigned long IOCTL_UFFDIO_WAKE;
/// The ioctl request number `UFFDIO_COPY`.
extern const unsigned long IOCTL_UFFDIO_COPY;
/// The ioctl request number `UFFDIO_ZEROPAGE`.
extern const unsigned long IOCTL_UFFDIO_ZEROPAGE;
/// The ioctl request number `USERFAULTFD_IOC_NEW` (on `/dev/userfaultfd`, Linux 6.1+).
extern const unsigned long IOCTL_USERFAULTFD_IOC_NEW;

/// `UFFD_API`, the API version `UFFDIO_API` expects.
extern const uint64_t CLINUX_UFFD_API;
/// `UFFDIO_REGISTER_MODE_MISSING`.
extern const uint64_t CLINUX_UFFDIO_REGISTER_MODE_MISSING;
/// `UFFDIO_COPY_MODE_DONTWAKE`.
extern const uint64_t CLINUX_UFFDIO_COPY_MODE_DONTWAKE;
/// `UFFDIO_ZEROPAGE_MODE_DONTWAKE`.
extern const uint64_t CLINUX_UFFDIO_ZEROPAGE_MODE_DONTWAKE;
/// The bit of `_UFFDIO_COPY` in an `ioctls` mask that `UFFDIO_REGISTER` returns.
extern const uint64_t CLINUX_UFFDIO_COPY_BIT;
/// The bit of `_UFFDIO_ZEROPAGE` in an `ioctls` mask that `UFFDIO_REGISTER` returns.
extern const uint64_t CLINUX_UFFDIO_ZEROPAGE_BIT;
/// `UFFD_USER_MODE_ONLY`, the `userfaultfd(2)` flag that limits the descriptor to faults
/// taken in user mode.
extern const int CLINUX_UFFD_USER_MODE_ONLY;

/// Calls the `userfaultfd(2)` system call (glibc has no wrapper) with `flags`
/// (`O_CLOEXEC`, `O_NONBLOCK`, `UFFD_USER_MODE_ONLY`). Returns the descriptor, or -1 with
/// `errno` set.
int clinux_userfaultfd(int flags);

/// One event read from a userfaultfd, unpacked from `struct uffd_msg`.
struct clinux_uffd_event {
    /// `UFFD_EVENT_*` (`UFFD_EVENT_PAGEFAULT` is 0x12).
    uint8_t event;
    /// For a page fault: `UFFD_PAGEFAULT_FLAG_*` (bit 0 is a write fault).
    uint64_t flags;
    /// For a page fault: the faulting address (page-aligned unless
    /// `UFFD_FEATURE_EXACT_ADDRESS` was asked for).
    uint64_t address;
    /// For a page fault with `UFFD_FEATURE_THREAD_ID`: the faulting thread id.
    uint32_t thread_id;
};

/// Reads up to `capacity` events from userfaultfd `fd` with one `read(2)` and unpacks them
/// into `events`. Returns how many were read, or -1 with `errno` set (`EAGAIN` when a
/// non-blocking descriptor has none).
long clinux_uffd_read_events(int fd, struct clinux_uffd_event *events, int capacity);

/// `lseek(fd, offset, SEEK_DATA)`: the first offset at or after `offset` that holds data,
/// or -1 with `errno` (`ENXIO` when only a hole follows up to the end of the file).
long long clinux_seek_data(int fd, long long offset);

/// `lseek(fd, offset, SEEK_HOLE)`: the first offset at or after `offset` inside a hole (the
/// end of the file counts as one), or -1 with `errno`.
long long clinux_seek_hole(int fd, long long offset);

/// How many bytes the file occupies on its file system (`st_blocks * 512` of `fstat`), or
/// -1 with `errno`.
long long clinux_allocated_bytes(int fd);

#endif
