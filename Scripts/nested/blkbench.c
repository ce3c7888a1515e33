/* ch-blkbench: O_DIRECT block-device I/O timed inside the guest, for the nested disk
 * benchmark (busybox's dd prints no timing and busybox has no random-I/O tool). Built
 * statically by prepare.sh into the initramfs images as /bin/ch-blkbench.
 *
 * Usage: ch-blkbench DEVICE read|write|randread BLOCK_BYTES COUNT [DEPTH]
 * prints "CH-BLKBENCH <mode> <block bytes> <count> <seconds>"; randread with DEPTH > 1
 * runs DEPTH threads of blocking O_DIRECT reads (DEPTH requests in flight, COUNT in all)
 * and prints the mode as "randread-qd<DEPTH>".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct reader {
    int fd;
    long block, count;
    unsigned long long blocks, state;
    int failed;
};

/* One thread of the random-read queue: its own buffer and xorshift stream. */
static void *read_randomly(void *argument) {
    struct reader *reader = argument;
    void *buffer;
    if (posix_memalign(&buffer, 4096, (size_t)reader->block) != 0) { reader->failed = 1; return NULL; }
    for (long i = 0; i < reader->count; i++) {
        reader->state ^= reader->state << 13; reader->state ^= reader->state >> 7; reader->state ^= reader->state << 17;
        off_t offset = (off_t)((reader->state % reader->blocks) * (unsigned long long)reader->block);
        if (pread(reader->fd, buffer, (size_t)reader->block, offset) != reader->block) { perror("pread"); reader->failed = 1; break; }
    }
    free(buffer);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) { fprintf(stderr, "usage: ch-blkbench DEVICE read|write|randread BLOCK_BYTES COUNT [DEPTH]\n"); return 2; }
    long depth = argc == 6 ? strtol(argv[5], NULL, 10) : 1;
    const char *mode = argv[2];
    long block = strtol(argv[3], NULL, 10), count = strtol(argv[4], NULL, 10);
    int writing = strcmp(mode, "write") == 0, random = strcmp(mode, "randread") == 0;
    if (block < 512 || block % 512 != 0 || count < 1 || (!writing && !random && strcmp(mode, "read") != 0)) {
        fprintf(stderr, "ch-blkbench: bad mode, block size or count\n");
        return 2;
    }
    int fd = open(argv[1], (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) { perror(argv[1]); return 1; }
    unsigned long long bytes = 0;
    if (ioctl(fd, BLKGETSIZE64, &bytes) != 0 || bytes < (unsigned long long)block) { perror("BLKGETSIZE64"); return 1; }
    unsigned long long blocks = bytes / (unsigned long long)block;
    void *buffer;
    if (posix_memalign(&buffer, 4096, (size_t)block) != 0) return 1;
    memset(buffer, 0xA5, (size_t)block);
    unsigned long long state = 0x2545F4914F6CDD1DULL;
    struct timespec start, end;
    if (random && depth > 1) {
        if (depth > 256) { fprintf(stderr, "ch-blkbench: depth at most 256\n"); return 2; }
        struct reader readers[256];
        pthread_t threads[256];
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (long t = 0; t < depth; t++) {
            readers[t] = (struct reader){ .fd = fd, .block = block, .count = count / depth + (t < count % depth), .blocks = blocks,
                                          .state = state + 0x9E3779B97F4A7C15ULL * (unsigned long long)(t + 1) };
            if (pthread_create(&threads[t], NULL, read_randomly, &readers[t]) != 0) { perror("pthread_create"); return 1; }
        }
        int failed = 0;
        for (long t = 0; t < depth; t++) { pthread_join(threads[t], NULL); failed |= readers[t].failed; }
        clock_gettime(CLOCK_MONOTONIC, &end);
        if (failed) return 1;
        double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
        printf("CH-BLKBENCH randread-qd%ld %ld %ld %.6f\n", depth, block, count, seconds);
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < count; i++) {
        unsigned long long index = (unsigned long long)i % blocks;
        if (random) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; index = state % blocks; }
        off_t offset = (off_t)(index * (unsigned long long)block);
        ssize_t done = writing ? pwrite(fd, buffer, (size_t)block, offset) : pread(fd, buffer, (size_t)block, offset);
        if (done != block) { perror(writing ? "pwrite" : "pread"); return 1; }
    }
    if (writing && fsync(fd) != 0) { perror("fsync"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    printf("CH-BLKBENCH %s %ld %ld %.6f\n", mode, block, count, seconds);
    return 0;
}
