// CLinux: the Linux kernel ABI that the VMM speaks, for Swift.
//
// Swift imports C structures and plain constants but not function-like macros, variadic
// functions or C11 atomics. This umbrella header brings in the kernel headers (KVM, virtio,
// the x86 boot protocol), exports every KVM ioctl request number as a constant (ioctls.h),
// and declares the few non-variadic shims the Swift layers above call.
#ifndef CLINUX_H
#define CLINUX_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <malloc.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <termios.h>

#include <linux/kvm.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_net.h>
#include <linux/virtio_console.h>
#include <linux/virtio_rng.h>
#include <linux/if_tun.h>
#if defined(__x86_64__)
#include <asm/bootparam.h>
#endif

#include "ioctls.h"
#include "userfaultfd_shims.h"
#include "landlock_shims.h"
#include "coalesced_shims.h"

// MARK: - ioctl

/// Calls `ioctl(fd, request, arg)` with a pointer argument (Swift cannot call the variadic
/// `ioctl`). Returns the kernel's result; on failure -1 with `errno` set.
int clinux_ioctl_ptr(int fd, unsigned long request, void *arg);

/// Calls `ioctl(fd, request, value)` with an integer argument (for example
/// `KVM_CHECK_EXTENSION` or `KVM_CREATE_VCPU`).
int clinux_ioctl_val(int fd, unsigned long request, unsigned long value);

/// Calls `open(path, flags)`; Swift cannot call the variadic `open`.
int clinux_open(const char *path, int flags);

/// Calls `open(path, flags, mode)` for a file that may be created.
int clinux_open_mode(const char *path, int flags, unsigned int mode);

/// Calls `fcntl(fd, command, value)` with an integer argument.
int clinux_fcntl_val(int fd, int command, long value);

/// Calls `pipe2(fds, O_CLOEXEC)`: a pipe whose ends no spawned process inherits.
int clinux_pipe_cloexec(int fds[2]);

/// Takes or tests an open-file-description lock over the whole file (`F_OFD_SETLK`):
/// `exclusive` non-zero asks for a write lock, zero for a read lock. Returns 0, or -1 with
/// `errno` (EAGAIN/EACCES when another open file holds a conflicting lock).
int clinux_ofd_lock(int fd, int exclusive, unsigned long long start, unsigned long long length);
/// Releases every open-file-description lock `fd` holds (`F_UNLCK` over the whole file).
int clinux_ofd_unlock(int fd);
/// `memfd_create(name, MFD_CLOEXEC)` through syscall(2) (a memory file for shared guest RAM).
int clinux_memfd_create(const char *name);

/// Calls `fallocate(fd, mode, offset, length)` (a GNU extension Swift's Glibc module hides).
int clinux_fallocate(int fd, int mode, long long offset, long long length);

/// The `O_DIRECT` open flag (a GNU extension Swift's Glibc module hides).
int clinux_o_direct(void);

/// Calls `accept4(fd, NULL, NULL, flags)` (a GNU extension Swift's Glibc module hides): takes one
/// pending connection with `SOCK_CLOEXEC`/`SOCK_NONBLOCK` set atomically. Returns the new
/// descriptor, or -1 with `errno` set.
int clinux_accept4(int fd, int flags);

/// Returns the current thread's `errno`.
int clinux_errno(void);

/// Sets the current thread's `errno`.
void clinux_set_errno(int value);

// MARK: - Layouts Swift cannot compute

/// `offsetof(struct kvm_run, mmio.data)`: the MMIO data bytes sit inside an anonymous union,
/// which Swift's `MemoryLayout.offset(of:)` cannot see through.
static inline size_t clinux_kvm_run_mmio_data_offset(void) { return offsetof(struct kvm_run, mmio.data); }

// MARK: - Signals

/// `SIGRTMIN` (a function in glibc, hence not importable as a constant).
int clinux_sigrtmin(void);

/// `SIGRTMAX`.
int clinux_sigrtmax(void);

/// Installs a handler for `signo` that does nothing, without `SA_RESTART`, so that a
/// blocking system call (such as `KVM_RUN`) in the receiving thread returns `EINTR`.
/// Returns 0 or -1 with `errno` set.
int clinux_install_noop_handler(int signo);

/// Unblocks `signo` in the calling thread's signal mask. Returns 0 or an error number.
int clinux_unblock_signal(int signo);

/// Blocks `signo` in the calling thread's signal mask. Returns 0 or an error number.
int clinux_block_signal(int signo);

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (threads it creates later inherit
/// the mask) and returns a non-blocking signalfd that reports them, or -1 with `errno` set.
int clinux_signalfd_termination(void);

/// Reads one signal from a signalfd made by `clinux_signalfd_termination`; returns its
/// number, 0 when none is pending, or -1 on error.
int clinux_read_signalfd(int fd);

/// The kernel thread id of the calling thread (`gettid`).
int clinux_gettid(void);

// MARK: - Terminals

/// Opens a new pseudo-terminal (`posix_openpt`, `grantpt`, `unlockpt`) and writes the path
/// of its terminal side into `path` (`ptsname_r`). Returns the controlling descriptor, or -1
/// with `errno` set. (The glibc declarations need feature macros Swift does not set.)
int clinux_open_pty(char *path, size_t size);

// MARK: - Threads

/// A thread body: called once with the context pointer handed to `clinux_thread_spawn`.
typedef void (*clinux_thread_body)(void *context);

/// Starts a joinable POSIX thread running `body(context)`. Stores its handle in `thread`.
/// Returns 0 or an error number.
int clinux_thread_spawn(pthread_t *thread, clinux_thread_body body, void *context);

/// Sets the calling thread's name as `ps`/`top` show it (15 bytes at most are kept).
void clinux_thread_set_name(const char *name);

// MARK: - Seccomp violations
// A thread whose seccomp filter traps (SECCOMP_RET_TRAP) gets SIGSYS. The handler below
// reports the thread and the system call on standard error and ends the process. It only
// calls write(2) and _exit(2), which every filter of the Seccomp module allows, and reads
// nothing that needs a lock or an allocation: the thread's name is copied into
// thread-local storage before its filter goes on, the syscall names into a fixed table.
// (A thread that installed no filter of its own runs under the inherited VMM filter, which
// lets the handler ask for its name with prctl(PR_GET_NAME).)

/// The number of entries of the syscall name table (syscall numbers 0 to 511).
#define CLINUX_SIGSYS_NAME_COUNT 512

/// Installs the SIGSYS handler for the whole process (`sigaction(2)`). It writes
/// `seccomp: thread <name> made forbidden syscall <number> (<name>)` to standard error and
/// exits with status 159 (128 + SIGSYS, what a shell reports for a process SIGSYS killed).
/// Returns 0, or -1 with `errno` set.
int clinux_sigsys_install(void);

/// Copies the calling thread's name (`prctl(PR_GET_NAME)`) into thread-local storage, for
/// the report. Call it on the thread, before its filter is installed.
void clinux_sigsys_remember_thread_name(void);

/// Sets the name the report prints for syscall `number`. `name` must live for ever; numbers
/// outside the table are ignored.
void clinux_sigsys_set_syscall_name(int number, const char *name);

// MARK: - Atomics
// Loads with acquire ordering and stores with release ordering, for memory shared with a
// guest (virtqueue indices) or with the kernel (kvm_run.immediate_exit). The address must be
// naturally aligned for the width.

/// Loads 8 bits with acquire ordering.
uint8_t clinux_load_acquire_u8(const void *address);
/// Loads 16 bits with acquire ordering.
uint16_t clinux_load_acquire_u16(const void *address);
/// Loads 32 bits with acquire ordering.
uint32_t clinux_load_acquire_u32(const void *address);
/// Loads 64 bits with acquire ordering.
uint64_t clinux_load_acquire_u64(const void *address);
/// Stores 8 bits with release ordering.
void clinux_store_release_u8(void *address, uint8_t value);
/// Stores 16 bits with release ordering.
void clinux_store_release_u16(void *address, uint16_t value);
/// Stores 32 bits with release ordering.
void clinux_store_release_u32(void *address, uint32_t value);
/// Stores 64 bits with release ordering.
void clinux_store_release_u64(void *address, uint64_t value);
/// Atomically ORs `bits` into the 64-bit word at `address` (sequentially consistent).
void clinux_fetch_or_u64(void *address, uint64_t bits);
/// Atomically swaps the 64-bit word at `address` with `value`, returning the old value.
uint64_t clinux_exchange_u64(void *address, uint64_t value);
/// A full memory fence.
void clinux_fence_seq_cst(void);


// MARK: - TAP devices and host interfaces (net.c)

/// `TUNSETIFF` on an open `/dev/net/tun`: attaches it to interface `name` (created when
/// missing; `NULL` or a `%d` pattern lets the kernel pick) with `IFF_*` `flags`. The name
/// the kernel used is copied to `out_name` (16 bytes, `IFNAMSIZ`) when not `NULL`.
int clinux_tun_set_iff(int fd, const char *name, int flags, char *out_name);

/// `TUNGETIFF`: the interface name (16 bytes) and `IFF_*` flags of an attached TAP descriptor.
int clinux_tun_get_iff(int fd, char *out_name, int *out_flags);

/// Sets interface `name`'s IPv4 address and netmask (network byte order), `SIOCSIFADDR`
/// then `SIOCSIFNETMASK`.
int clinux_if_set_ipv4(const char *name, uint32_t address_be, uint32_t netmask_be);

/// Brings interface `name` up (`IFF_UP | IFF_RUNNING`).
int clinux_if_set_up(const char *name);

/// Sets interface `name`'s Ethernet address (6 bytes).
int clinux_if_set_hwaddr(const char *name, const uint8_t *mac);

/// Reads interface `name`'s Ethernet address into `mac` (6 bytes).
int clinux_if_get_hwaddr(const char *name, uint8_t *mac);

/// Sets interface `name`'s MTU.
int clinux_if_set_mtu(const char *name, int mtu);

/// Reads interface `name`'s MTU.
int clinux_if_get_mtu(const char *name, int *mtu);

/// The ioctl request number `TUNSETVNETHDRSZ` (a function-like macro in <linux/if_tun.h>).
extern const unsigned long IOCTL_TUNSETVNETHDRSZ;
/// The ioctl request number `TUNSETOFFLOAD`.
extern const unsigned long IOCTL_TUNSETOFFLOAD;

#endif
