// The io_uring engine behind ciouring.h (liburing).
#include "ciouring.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct slot {
    int busy;
    int op;
    int fd;
    uint64_t offset;       // where the remaining bytes start
    struct iovec *iov;     // remaining iovecs (points into inline storage or `heap`)
    unsigned count;
    struct iovec *heap;    // an allocated list for a long request, freed at completion
    int64_t done;          // bytes moved so far
};

struct ciouring_engine {
    struct io_uring ring;
    int eventfd;
    unsigned slot_count;
    unsigned inline_iovecs;
    unsigned in_flight;
    struct slot *slots;
    struct iovec *storage; // slot_count * inline_iovecs
};

int ciouring_probe(void) {
    struct io_uring ring;
    int result = io_uring_queue_init(2, &ring, 0);
    if (result < 0) return result;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (probe == NULL) {
        io_uring_queue_exit(&ring);
        return -EOPNOTSUPP;
    }
    int ok = io_uring_opcode_supported(probe, IORING_OP_READV) && io_uring_opcode_supported(probe, IORING_OP_WRITEV)
        && io_uring_opcode_supported(probe, IORING_OP_FSYNC);
    io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    return ok ? 0 : -EOPNOTSUPP;
}

ciouring_engine *ciouring_create(unsigned entries, unsigned slots, unsigned inline_iovecs, int *error) {
    ciouring_engine *engine = calloc(1, sizeof *engine);
    if (engine == NULL) { *error = -ENOMEM; return NULL; }
    engine->eventfd = -1;
    engine->slot_count = slots;
    engine->inline_iovecs = inline_iovecs ? inline_iovecs : 1;
    engine->slots = calloc(slots ? slots : 1, sizeof *engine->slots);
    engine->storage = calloc((size_t)(slots ? slots : 1) * engine->inline_iovecs, sizeof *engine->storage);
    if (engine->slots == NULL || engine->storage == NULL) {
        free(engine->slots); free(engine->storage); free(engine);
        *error = -ENOMEM;
        return NULL;
    }
    int result = io_uring_queue_init(entries ? entries : 1, &engine->ring, 0);
    if (result < 0) {
        free(engine->slots); free(engine->storage); free(engine);
        *error = result;
        return NULL;
    }
    engine->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (engine->eventfd < 0) {
        *error = -errno;
        io_uring_queue_exit(&engine->ring);
        free(engine->slots); free(engine->storage); free(engine);
        return NULL;
    }
    result = io_uring_register_eventfd(&engine->ring, engine->eventfd);
    if (result < 0) {
        *error = result;
        close(engine->eventfd);
        io_uring_queue_exit(&engine->ring);
        free(engine->slots); free(engine->storage); free(engine);
        return NULL;
    }
    return engine;
}

void ciouring_destroy(ciouring_engine *engine) {
    if (engine == NULL) return;
    // The kernel may still write into the slots' buffers: wait for every request.
    unsigned slots[16];
    int results[16];
    while (engine->in_flight > 0) {
        ciouring_submit(engine);
        if (ciouring_wait(engine) < 0) break;
        ciouring_reap(engine, slots, results, 16);
    }
    for (unsigned index = 0; index < engine->slot_count; index++) free(engine->slots[index].heap);
    io_uring_queue_exit(&engine->ring);
    close(engine->eventfd);
    free(engine->slots);
    free(engine->storage);
    free(engine);
}

int ciouring_eventfd(const ciouring_engine *engine) { return engine->eventfd; }

void ciouring_clear_event(ciouring_engine *engine) {
    eventfd_t value;
    (void)eventfd_read(engine->eventfd, &value);
}

void ciouring_signal_event(ciouring_engine *engine) { (void)eventfd_write(engine->eventfd, 1); }

unsigned ciouring_in_flight(const ciouring_engine *engine) { return engine->in_flight; }

/// Puts the slot's remaining request into a submission entry; -EAGAIN when the queue is full.
static int queue_slot(ciouring_engine *engine, unsigned index) {
    struct slot *slot = &engine->slots[index];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&engine->ring);
    if (sqe == NULL) {
        // Make room by handing the queued entries to the kernel, then try once more.
        if (io_uring_submit(&engine->ring) < 0) return -EAGAIN;
        sqe = io_uring_get_sqe(&engine->ring);
        if (sqe == NULL) return -EAGAIN;
    }
    switch (slot->op) {
    case CIOURING_READ: io_uring_prep_readv(sqe, slot->fd, slot->iov, slot->count, slot->offset); break;
    case CIOURING_WRITE: io_uring_prep_writev(sqe, slot->fd, slot->iov, slot->count, slot->offset); break;
    default: io_uring_prep_fsync(sqe, slot->fd, IORING_FSYNC_DATASYNC); break;
    }
    io_uring_sqe_set_data64(sqe, index);
    return 0;
}

int ciouring_prepare(ciouring_engine *engine, unsigned index, int op, int fd,
                     const struct iovec *iov, unsigned count, uint64_t offset) {
    if (index >= engine->slot_count || op < CIOURING_READ || op > CIOURING_FDATASYNC) return -EINVAL;
    struct slot *slot = &engine->slots[index];
    if (slot->busy) return -EBUSY;
    struct iovec *list = engine->storage + (size_t)index * engine->inline_iovecs;
    struct iovec *heap = NULL;
    if (count > engine->inline_iovecs) {
        heap = malloc((size_t)count * sizeof *heap);
        if (heap == NULL) return -ENOMEM;
        list = heap;
    }
    if (count > 0) memcpy(list, iov, (size_t)count * sizeof *list);
    *slot = (struct slot){ .busy = 1, .op = op, .fd = fd, .offset = offset, .iov = list, .count = count, .heap = heap, .done = 0 };
    int result = queue_slot(engine, index);
    if (result < 0) {
        free(heap);
        *slot = (struct slot){ 0 };
        return result;
    }
    engine->in_flight++;
    return 0;
}

int ciouring_submit(ciouring_engine *engine) {
    int result;
    do { result = io_uring_submit(&engine->ring); } while (result == -EINTR);
    return result;
}

/// Moves a slot's iovecs past `moved` bytes; returns the bytes left.
static size_t advance(struct slot *slot, size_t moved) {
    slot->offset += moved;
    while (slot->count > 0 && moved >= slot->iov[0].iov_len) {
        moved -= slot->iov[0].iov_len;
        slot->iov++;
        slot->count--;
    }
    if (slot->count > 0) {
        slot->iov[0].iov_base = (char *)slot->iov[0].iov_base + moved;
        slot->iov[0].iov_len -= moved;
    }
    size_t left = 0;
    for (unsigned index = 0; index < slot->count; index++) left += slot->iov[index].iov_len;
    return left;
}

unsigned ciouring_reap(ciouring_engine *engine, unsigned *slots, int *results, unsigned max) {
    unsigned found = 0;
    int resubmitted = 0;
    struct io_uring_cqe *cqe;
    while (found < max && io_uring_peek_cqe(&engine->ring, &cqe) == 0) {
        unsigned index = (unsigned)io_uring_cqe_get_data64(cqe);
        int result = cqe->res;
        io_uring_cqe_seen(&engine->ring, cqe);
        if (index >= engine->slot_count || !engine->slots[index].busy) continue;
        struct slot *slot = &engine->slots[index];
        if (result > 0 && slot->op != CIOURING_FDATASYNC) {
            slot->done += result;
            if (advance(slot, (size_t)result) > 0 && queue_slot(engine, index) == 0) {
                // A short transfer: the rest goes to the kernel again.
                resubmitted = 1;
                continue;
            }
            result = (int)slot->done;
            // A remainder that could not be queued is an error, not a silent short transfer.
            if (slot->count > 0) result = -EAGAIN;
        } else if (result == 0 && slot->op != CIOURING_FDATASYNC && slot->count > 0) {
            // Nothing moved with bytes left: the end of the file for a read, a stuck write.
            result = slot->op == CIOURING_READ ? -ENODATA : -EIO;
        } else if (result == 0) {
            result = (int)slot->done;
        }
        free(slot->heap);
        *slot = (struct slot){ 0 };
        engine->in_flight--;
        slots[found] = index;
        results[found] = result;
        found++;
    }
    if (resubmitted) ciouring_submit(engine);
    return found;
}

int ciouring_wait(ciouring_engine *engine) {
    if (engine->in_flight == 0) return 0;
    struct io_uring_cqe *cqe;
    int result;
    do { result = io_uring_wait_cqe(&engine->ring, &cqe); } while (result == -EINTR);
    return result;
}
