/* ch-netbench: a timed TCP transfer for the nested network tests and benchmark, run on
 * both sides (busybox has no iperf, and its nc prints no timing). Built statically by
 * prepare.sh into the level-2 initramfs as /bin/ch-netbench and into the cache for
 * level 1.
 *
 * Usage: ch-netbench send HOST PORT SOURCE   SOURCE: a file, or zero:BYTES
 *        ch-netbench recv PORT DEST          DEST: a file, or - to discard
 * send connects (retrying for 20 s while nobody listens), writes SOURCE and closes;
 * recv accepts one connection and reads until the sender closes. Each prints
 *   "CH-NETBENCH <send|recv> <bytes> <seconds> <MiB/s>"
 * timed from the connection to the last byte (the receiver's figure is the one to use).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void report(const char *mode, unsigned long long bytes, double seconds) {
    printf("CH-NETBENCH %s %llu %.3f %.1f\n", mode, bytes, seconds, seconds > 0 ? bytes / seconds / 1048576.0 : 0.0);
    fflush(stdout);
}

static int do_send(const char *host, int port, const char *source) {
    static char buffer[1 << 16];
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) { fprintf(stderr, "ch-netbench: bad address %s\n", host); return 2; }
    int file = -1;
    unsigned long long zero_bytes = 0;
    if (strncmp(source, "zero:", 5) == 0) {
        zero_bytes = strtoull(source + 5, NULL, 10);
    } else if ((file = open(source, O_RDONLY)) < 0) {
        perror(source);
        return 1;
    }
    int sock = -1;
    double deadline = now() + 20;
    for (;;) {
        sock = socket(AF_INET, SOCK_STREAM, 0);
        if (sock < 0) { perror("socket"); return 1; }
        if (connect(sock, (struct sockaddr *)&address, sizeof address) == 0) break;
        int error = errno;
        close(sock);
        if (now() > deadline) { errno = error; perror("connect"); return 1; }
        usleep(100000);
    }
    double start = now();
    unsigned long long sent = 0;
    for (;;) {
        ssize_t count;
        if (file >= 0) {
            count = read(file, buffer, sizeof buffer);
            if (count < 0) { perror("read"); return 1; }
        } else {
            unsigned long long left = zero_bytes - sent;
            count = left < sizeof buffer ? (ssize_t)left : (ssize_t)sizeof buffer;
        }
        if (count == 0) break;
        for (ssize_t done = 0; done < count;) {
            ssize_t written = write(sock, buffer + done, count - done);
            if (written < 0) { if (errno == EINTR) continue; perror("write"); return 1; }
            done += written;
        }
        sent += count;
    }
    shutdown(sock, SHUT_WR);
    /* Wait for the receiver to close, so that the time covers delivery. */
    while (read(sock, buffer, sizeof buffer) > 0) {}
    report("send", sent, now() - start);
    close(sock);
    return 0;
}

static int do_recv(int port, const char *dest) {
    static char buffer[1 << 16];
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1) != 0) { perror("bind/listen"); return 1; }
    int out = -1;
    if (strcmp(dest, "-") != 0 && (out = open(dest, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0) { perror(dest); return 1; }
    int sock = accept(listener, NULL, NULL);
    if (sock < 0) { perror("accept"); return 1; }
    double start = now();
    unsigned long long received = 0;
    for (;;) {
        ssize_t count = read(sock, buffer, sizeof buffer);
        if (count < 0) { if (errno == EINTR) continue; perror("read"); return 1; }
        if (count == 0) break;
        if (out >= 0) {
            for (ssize_t done = 0; done < count;) {
                ssize_t written = write(out, buffer + done, count - done);
                if (written < 0) { perror("write"); return 1; }
                done += written;
            }
        }
        received += count;
    }
    double seconds = now() - start;
    if (out >= 0) close(out);
    close(sock);
    report("recv", received, seconds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "send") == 0) return do_send(argv[2], atoi(argv[3]), argv[4]);
    if (argc == 4 && strcmp(argv[1], "recv") == 0) return do_recv(atoi(argv[2]), argv[3]);
    fprintf(stderr, "usage: ch-netbench send HOST PORT SOURCE | ch-netbench recv PORT DEST\n");
    return 2;
}
