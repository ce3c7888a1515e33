/* ch-vsockbench: the two ends of the nested vsock test, run in the level-2 guest (AF_VSOCK)
 * and in level 1 (the hybrid vsock's Unix sockets). Built statically by prepare.sh into the
 * level-2 initramfs as /bin/ch-vsockbench and into the cache for level 1.
 *
 * Usage: ch-vsockbench vsock-listen PORT SEND RECV      accept one AF_VSOCK connection
 *        ch-vsockbench vsock-connect CID PORT SEND RECV connect to CID:PORT over AF_VSOCK
 *        ch-vsockbench unix-connect PATH PORT SEND RECV connect to the hybrid socket PATH,
 *                                                       say "CONNECT PORT", expect "OK ..."
 *        ch-vsockbench unix-listen PATH SEND RECV       accept one connection at PATH
 *                                                       (a guest connecting to PATH's port)
 * On the connection, both directions at once: the bytes of file SEND go out (then the
 * writing side is shut down) while everything received until end of stream goes to file
 * RECV. Prints "CH-VSOCKBENCH <mode> sent <bytes> received <bytes> <seconds>" (and
 * "CH-VSOCKBENCH ok <line>" for the handshake's answer). Exit status 0 on success.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int fail(const char *what) {
    fprintf(stderr, "ch-vsockbench: %s: %s\n", what, strerror(errno));
    return 1;
}

/* Sends the file at `send_path` and receives into `recv_path` at once on `fd`. */
static int exchange(const char *mode, int fd, const char *send_path, const char *recv_path) {
    static char out[1 << 16], in[1 << 16];
    int source = open(send_path, O_RDONLY);
    if (source < 0) return fail(send_path);
    int sink = open(recv_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (sink < 0) return fail(recv_path);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    unsigned long long sent = 0, received = 0;
    size_t pending = 0, offset = 0;
    int sending = 1, receiving = 1;
    double start = now();
    while (sending || receiving) {
        if (sending && pending == 0) {
            ssize_t n = read(source, out, sizeof out);
            if (n < 0) return fail("read SEND");
            if (n == 0) {
                shutdown(fd, SHUT_WR);
                sending = 0;
            }
            pending = (size_t)n;
            offset = 0;
        }
        struct pollfd p = { .fd = fd, .events = (short)((sending ? POLLOUT : 0) | (receiving ? POLLIN : 0)) };
        if (poll(&p, 1, 60000) <= 0) { fprintf(stderr, "ch-vsockbench: no progress for 60 s\n"); return 1; }
        if (receiving && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(fd, in, sizeof in);
            if (n > 0) {
                if (write(sink, in, (size_t)n) != n) return fail("write RECV");
                received += (unsigned long long)n;
            } else if (n == 0) {
                receiving = 0;
            } else if (errno != EAGAIN && errno != EINTR) {
                return fail("read from the connection");
            }
        }
        if (sending && pending > 0 && (p.revents & POLLOUT)) {
            ssize_t n = write(fd, out + offset, pending);
            if (n > 0) {
                offset += (size_t)n;
                pending -= (size_t)n;
                sent += (unsigned long long)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return fail("write to the connection");
            }
        }
    }
    close(sink);
    close(source);
    close(fd);
    printf("CH-VSOCKBENCH %s sent %llu received %llu %.3f\n", mode, sent, received, now() - start);
    fflush(stdout);
    return 0;
}

static int unix_address(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(address->sun_path, path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "vsock-listen") == 0) {
        struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)atoi(argv[2]) };
        int listener = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (listener < 0) return fail("socket(AF_VSOCK)");
        if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) return fail("bind");
        if (listen(listener, 1) < 0) return fail("listen");
        printf("CH-VSOCKBENCH listening %s\n", argv[2]);
        fflush(stdout);
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) return fail("accept");
        return exchange(argv[1], fd, argv[3], argv[4]);
    }
    if (argc == 6 && strcmp(argv[1], "vsock-connect") == 0) {
        struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = (unsigned)atoi(argv[2]), .svm_port = (unsigned)atoi(argv[3]) };
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0) return fail("socket(AF_VSOCK)");
        if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) return fail("connect");
        return exchange(argv[1], fd, argv[4], argv[5]);
    }
    if (argc == 6 && strcmp(argv[1], "unix-connect") == 0) {
        struct sockaddr_un address;
        if (unix_address(argv[2], &address) < 0) return fail(argv[2]);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0) return fail("socket(AF_UNIX)");
        if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) return fail("connect");
        char command[32];
        int length = snprintf(command, sizeof command, "CONNECT %s\n", argv[3]);
        if (write(fd, command, (size_t)length) != length) return fail("write CONNECT");
        /* The answer, byte by byte so that no data after it is taken. */
        char line[64];
        size_t used = 0;
        while (used + 1 < sizeof line) {
            ssize_t n = read(fd, line + used, 1);
            if (n <= 0) { fprintf(stderr, "ch-vsockbench: the connection closed before OK\n"); return 1; }
            if (line[used++] == '\n') break;
        }
        line[used] = 0;
        if (strncmp(line, "OK ", 3) != 0) { fprintf(stderr, "ch-vsockbench: unexpected answer %s", line); return 1; }
        printf("CH-VSOCKBENCH ok %s", line);
        return exchange(argv[1], fd, argv[4], argv[5]);
    }
    if (argc == 5 && strcmp(argv[1], "unix-listen") == 0) {
        struct sockaddr_un address;
        if (unix_address(argv[2], &address) < 0) return fail(argv[2]);
        int listener = socket(AF_UNIX, SOCK_STREAM, 0);
        if (listener < 0) return fail("socket(AF_UNIX)");
        unlink(argv[2]);
        if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) return fail("bind");
        if (listen(listener, 1) < 0) return fail("listen");
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) return fail("accept");
        unlink(argv[2]);
        return exchange(argv[1], fd, argv[3], argv[4]);
    }
    fprintf(stderr, "usage: ch-vsockbench vsock-listen PORT SEND RECV | vsock-connect CID PORT SEND RECV |\n"
                    "       unix-connect PATH PORT SEND RECV | unix-listen PATH SEND RECV\n");
    return 2;
}
