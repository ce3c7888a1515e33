// The userfaultfd and sparse-file shims declared in userfaultfd_shims.h.
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include "userfaultfd_shims.h"

const unsigned long IOCTL_UFFDIO_API = UFFDIO_API;
const unsigned long IOCTL_UFFDIO_REGISTER = UFFDIO_REGISTER;
const unsigned long IOCTL_UFFDIO_UNREGISTER = UFFDIO_UNREGISTER;
const unsigned long IOCTL_UFFDIO_WAKE = UFFDIO_WAKE;
const unsigned long IOCTL_UFFDIO_COPY = UFFDIO_COPY;
const unsigned long IOCTL_UFFDIO_ZEROPAGE = UFFDIO_ZEROPAGE;
#ifdef USERFAULTFD_IOC_NEW
const unsigned long IOCTL_USERFAULTFD_IOC_NEW = USERFAULTFD_IOC_NEW;
#else
// _IO(0xAA, 0x00), as Linux 6.1 defines it, for older headers.
const unsigned long IOCTL_USERFAULTFD_IOC_NEW = _IO(0xAA, 0x00);
#endif

const uint64_t CLINUX_UFFD_API = UFFD_API;
const uint64_t CLINUX_UFFDIO_REGISTER_MODE_MISSING = UFFDIO_REGISTER_MODE_MISSING;
const uint64_t CLINUX_UFFDIO_COPY_MODE_DONTWAKE = UFFDIO_COPY_MODE_DONTWAKE;
const uint64_t CLINUX_UFFDIO_ZEROPAGE_MODE_DONTWAKE = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
const uint64_t CLINUX_UFFDIO_COPY_BIT = (uint64_t)1 << _UFFDIO_COPY;
const uint64_t CLINUX_UFFDIO_ZEROPAGE_BIT = (uint64_t)1 << _UFFDIO_ZEROPAGE;
#ifdef UFFD_USER_MODE_ONLY
const int CLINUX_UFFD_USER_MODE_ONLY = UFFD_USER_MODE_ONLY;
#else
const int CLINUX_UFFD_USER_MODE_ONLY = 1;
#endif

int clinux_userfaultfd(int flags) { return (int)syscall(SYS_userfaultfd, flags); }

long clinux_uffd_read_events(int fd, struct clinux_uffd_event *events, int capacity) {
    enum { batch = 64 };
    struct uffd_msg messages[batch];
    if (capacity <= 0) return 0;
    if (capacity > batch) capacity = batch;
    ssize_t n = read(fd, messages, sizeof(struct uffd_msg) * (size_t)capacity);
    if (n < 0) return -1;
    long count = (long)(n / (ssize_t)sizeof(struct uffd_msg));
    for (long i = 0; i < count; i++) {
        memset(&events[i], 0, sizeof(events[i]));
        events[i].event = messages[i].event;
        if (messages[i].event == UFFD_EVENT_PAGEFAULT) {
            events[i].flags = messages[i].arg.pagefault.flags;
            events[i].address = messages[i].arg.pagefault.address;
            events[i].thread_id = messages[i].arg.pagefault.feat.ptid;
        }
    }
    return count;
}

long long clinux_seek_data(int fd, long long offset) { return (long long)lseek(fd, (off_t)offset, SEEK_DATA); }
long long clinux_seek_hole(int fd, long long offset) { return (long long)lseek(fd, (off_t)offset, SEEK_HOLE); }

long long clinux_allocated_bytes(int fd) {
    struct stat info;
    if (fstat(fd, &info) != 0) return -1;
    return (long long)info.st_blocks * 512;
}
