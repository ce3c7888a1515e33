// The non-variadic shims declared in CLinux.h.
#define _GNU_SOURCE
#include "CLinux.h"
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/signalfd.h>

int clinux_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int clinux_ioctl_val(int fd, unsigned long request, unsigned long value) { return ioctl(fd, request, value); }
int clinux_open(const char *path, int flags) { return open(path, flags); }
int clinux_open_mode(const char *path, int flags, unsigned int mode) { return open(path, flags, (mode_t)mode); }
int clinux_fcntl_val(int fd, int command, long value) { return fcntl(fd, command, value); }
int clinux_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int clinux_ofd_lock(int fd, int exclusive, unsigned long long start, unsigned long long length) {
    struct flock lock = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = (off_t)start, .l_len = (off_t)length, .l_pid = 0 };
    return fcntl(fd, F_OFD_SETLK, &lock);
}
int clinux_ofd_unlock(int fd) {
    struct flock lock = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0 };
    return fcntl(fd, F_OFD_SETLK, &lock);
}
int clinux_memfd_create(const char *name) { return (int)syscall(SYS_memfd_create, name, 1U /* MFD_CLOEXEC */); }
int clinux_fallocate(int fd, int mode, long long offset, long long length) { return fallocate(fd, mode, (off_t)offset, (off_t)length); }
int clinux_o_direct(void) { return O_DIRECT; }
int clinux_accept4(int fd, int flags) { return accept4(fd, NULL, NULL, flags); }
int clinux_errno(void) { return errno; }
void clinux_set_errno(int value) { errno = value; }

int clinux_open_pty(char *path, size_t size) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) != 0 || unlockpt(fd) != 0) { int saved = errno; close(fd); errno = saved; return -1; }
    int result = ptsname_r(fd, path, size);
    if (result != 0) { close(fd); errno = result; return -1; }
    return fd;
}

int clinux_sigrtmin(void) { return SIGRTMIN; }
int clinux_sigrtmax(void) { return SIGRTMAX; }

static void clinux_noop_handler(int signo) { (void)signo; }

int clinux_install_noop_handler(int signo) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = clinux_noop_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; // no SA_RESTART: the interrupted ioctl must return EINTR
    return sigaction(signo, &action, NULL);
}

static int clinux_change_mask(int how, int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    return pthread_sigmask(how, &set, NULL);
}

int clinux_unblock_signal(int signo) { return clinux_change_mask(SIG_UNBLOCK, signo); }
int clinux_block_signal(int signo) { return clinux_change_mask(SIG_BLOCK, signo); }
int clinux_signalfd_termination(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int result = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (result != 0) { errno = result; return -1; }
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int clinux_read_signalfd(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof(info));
    if (n == (ssize_t)sizeof(info)) return (int)info.ssi_signo;
    if (n < 0 && errno == EAGAIN) return 0;
    return -1;
}

int clinux_gettid(void) { return (int)syscall(SYS_gettid); }

struct clinux_thread_start { clinux_thread_body body; void *context; };

static void *clinux_thread_trampoline(void *raw) {
    struct clinux_thread_start start = *(struct clinux_thread_start *)raw;
    free(raw);
    start.body(start.context);
    return NULL;
}

int clinux_thread_spawn(pthread_t *thread, clinux_thread_body body, void *context) {
    struct clinux_thread_start *start = malloc(sizeof(*start));
    if (start == NULL) return ENOMEM;
    start->body = body;
    start->context = context;
    int result = pthread_create(thread, NULL, clinux_thread_trampoline, start);
    if (result != 0) free(start);
    return result;
}

void clinux_thread_set_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof(short_name) - 1);
    short_name[sizeof(short_name) - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

static const char *clinux_sigsys_names[CLINUX_SIGSYS_NAME_COUNT];
static __thread char clinux_sigsys_thread_name[17];

void clinux_sigsys_set_syscall_name(int number, const char *name) {
    if (number >= 0 && number < CLINUX_SIGSYS_NAME_COUNT) clinux_sigsys_names[number] = name;
}

void clinux_sigsys_remember_thread_name(void) {
    char name[17] = { 0 };
    if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0) strcpy(name, "?");
    memcpy(clinux_sigsys_thread_name, name, sizeof(name));
}

/// Appends `text` to `buffer` (of `size` bytes) at `used`; returns the new length.
static size_t clinux_sigsys_append(char *buffer, size_t size, size_t used, const char *text) {
    while (*text && used < size) buffer[used++] = *text++;
    return used;
}

/// Appends the decimal digits of `value`.
static size_t clinux_sigsys_append_number(char *buffer, size_t size, size_t used, long value) {
    char digits[24];
    size_t count = 0;
    unsigned long magnitude = value < 0 ? -(unsigned long)value : (unsigned long)value;
    do { digits[count++] = (char)('0' + magnitude % 10); magnitude /= 10; } while (magnitude && count < sizeof(digits));
    if (value < 0 && used < size) buffer[used++] = '-';
    while (count && used < size) buffer[used++] = digits[--count];
    return used;
}

static void clinux_sigsys_handler(int signo, siginfo_t *info, void *context) {
    (void)signo;
    (void)context;
    // Async-signal-safe: only stack buffers, thread-local and static data, prctl(2), write(2), _exit(2).
    char message[192];
    size_t used = 0;
    int number = info->si_syscall;
    // A thread that never installed a filter of its own runs under the VMM thread's filter
    // it inherited, which allows PR_GET_NAME; a thread that did remembered its name first.
    if (!clinux_sigsys_thread_name[0] && prctl(PR_GET_NAME, clinux_sigsys_thread_name, 0, 0, 0) != 0)
        clinux_sigsys_thread_name[0] = 0;
    const char *thread = clinux_sigsys_thread_name[0] ? clinux_sigsys_thread_name : "?";
    const char *name = number >= 0 && number < CLINUX_SIGSYS_NAME_COUNT ? clinux_sigsys_names[number] : NULL;
    used = clinux_sigsys_append(message, sizeof(message), used, "seccomp: thread ");
    used = clinux_sigsys_append(message, sizeof(message), used, thread);
    used = clinux_sigsys_append(message, sizeof(message), used, " made forbidden syscall ");
    used = clinux_sigsys_append_number(message, sizeof(message), used, number);
    used = clinux_sigsys_append(message, sizeof(message), used, " (");
    if (name) used = clinux_sigsys_append(message, sizeof(message), used, name);
    else used = clinux_sigsys_append_number(message, sizeof(message), used, number);
    used = clinux_sigsys_append(message, sizeof(message), used, ")\n");
    ssize_t written = write(STDERR_FILENO, message, used);
    (void)written;
    _exit(128 + SIGSYS);
}

int clinux_sigsys_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = clinux_sigsys_handler;
    sigfillset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO;
    return sigaction(SIGSYS, &action, NULL);
}

uint8_t clinux_load_acquire_u8(const void *a) { return __atomic_load_n((const uint8_t *)a, __ATOMIC_ACQUIRE); }
uint16_t clinux_load_acquire_u16(const void *a) { return __atomic_load_n((const uint16_t *)a, __ATOMIC_ACQUIRE); }
uint32_t clinux_load_acquire_u32(const void *a) { return __atomic_load_n((const uint32_t *)a, __ATOMIC_ACQUIRE); }
uint64_t clinux_load_acquire_u64(const void *a) { return __atomic_load_n((const uint64_t *)a, __ATOMIC_ACQUIRE); }
void clinux_store_release_u8(void *a, uint8_t v) { __atomic_store_n((uint8_t *)a, v, __ATOMIC_RELEASE); }
void clinux_store_release_u16(void *a, uint16_t v) { __atomic_store_n((uint16_t *)a, v, __ATOMIC_RELEASE); }
void clinux_store_release_u32(void *a, uint32_t v) { __atomic_store_n((uint32_t *)a, v, __ATOMIC_RELEASE); }
void clinux_store_release_u64(void *a, uint64_t v) { __atomic_store_n((uint64_t *)a, v, __ATOMIC_RELEASE); }
void clinux_fetch_or_u64(void *a, uint64_t bits) { __atomic_fetch_or((uint64_t *)a, bits, __ATOMIC_SEQ_CST); }
uint64_t clinux_exchange_u64(void *a, uint64_t v) { return __atomic_exchange_n((uint64_t *)a, v, __ATOMIC_SEQ_CST); }
void clinux_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
