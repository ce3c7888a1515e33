// A per-queue io_uring engine for block requests, over liburing: a fixed table of request
// slots (a slot is a virtio-blk descriptor head), readv/writev/fdatasync submissions whose
// iovecs live in the slot's storage until completion, short transfers resubmitted, and an
// eventfd registered with the ring so an epoll loop learns about completions.
#ifndef CIOURING_H
#define CIOURING_H

#include <stdint.h>
#include <sys/uio.h>

/// One engine (opaque).
typedef struct ciouring_engine ciouring_engine;

/// Operations a slot can run.
enum ciouring_op {
    CIOURING_READ = 0,
    CIOURING_WRITE = 1,
    CIOURING_FDATASYNC = 2,
};

/// 0 when this kernel (and the calling thread's seccomp filter) lets a ring be set up and
/// supports READV, WRITEV and FSYNC; otherwise -errno (-EOPNOTSUPP for a missing opcode).
int ciouring_probe(void);

/// An engine of `slots` slots (tokens 0..<slots) and a ring of `entries` submissions, with
/// `inline_iovecs` iovecs of storage per slot (longer lists are allocated per request).
/// NULL with *error = -errno on failure.
ciouring_engine *ciouring_create(unsigned entries, unsigned slots, unsigned inline_iovecs, int *error);
/// Closes the ring and the eventfd. Requests still in flight are waited for first.
void ciouring_destroy(ciouring_engine *engine);
/// The eventfd signalled on each completion (non-blocking).
int ciouring_eventfd(const ciouring_engine *engine);
/// Reads the eventfd's counter back to zero (non-blocking; nothing happens when it is zero).
void ciouring_clear_event(ciouring_engine *engine);
/// Adds one to the eventfd's counter, as a completion does.
void ciouring_signal_event(ciouring_engine *engine);
/// The number of slots with a request in flight.
unsigned ciouring_in_flight(const ciouring_engine *engine);

/// Queues a request on `slot` (not yet submitted to the kernel): `op` on `fd` at `offset`
/// with `count` iovecs (copied). 0, or -EBUSY (slot in use), -EINVAL (bad slot or op),
/// -ENOMEM, -EAGAIN (submission queue full even after submitting).
int ciouring_prepare(ciouring_engine *engine, unsigned slot, int op, int fd,
                     const struct iovec *iov, unsigned count, uint64_t offset);
/// Submits every queued request: the number submitted or -errno.
int ciouring_submit(ciouring_engine *engine);
/// Takes up to `max` finished requests without blocking: their slots and results (bytes
/// moved, or -errno; a short read that reached the end of the file is -ENODATA). Short
/// transfers are resubmitted and reported only when whole. Returns how many were written.
unsigned ciouring_reap(ciouring_engine *engine, unsigned *slots, int *results, unsigned max);
/// Blocks until at least one completion is waiting (0) or fails (-errno); returns at once
/// when nothing is in flight.
int ciouring_wait(ciouring_engine *engine);

#endif
