/* ch-blkbench: O_DIRECT block-device I/O timed inside the guest, for the nested disk
 * benchmark (busybox's dd prints no timing and busybox has no random-I/O tool). Built
 * statically by prepare.sh into the initramfs images as /bin/ch-blkbench.
 *
 * Usage: ch-blkbench DEVICE read|write|randread BLOCK_BYTES COUNT
 * prints "CH-BLKBENCH <mode> <block bytes> <count> <seconds>"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: ch-blkbench DEVICE read|write|randread BLOCK_BYTES COUNT\n"); return 2; }
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
