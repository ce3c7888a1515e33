// TAP devices and host interface settings: the ioctls whose argument is a `struct ifreq`
// (a union Swift handles poorly), wrapped as plain functions.
#include "CLinux.h"

#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/sockios.h>

static int copy_name(struct ifreq *request, const char *name) {
    if (name == NULL) return 0;
    size_t length = strlen(name);
    if (length >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    memcpy(request->ifr_name, name, length);
    return 0;
}

int clinux_tun_set_iff(int fd, const char *name, int flags, char *out_name) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    request.ifr_flags = (short)flags;
    if (ioctl(fd, TUNSETIFF, &request) != 0) return -1;
    if (out_name != NULL) { memcpy(out_name, request.ifr_name, IFNAMSIZ); out_name[IFNAMSIZ - 1] = 0; }
    return 0;
}

int clinux_tun_get_iff(int fd, char *out_name, int *out_flags) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (ioctl(fd, TUNGETIFF, &request) != 0) return -1;
    if (out_name != NULL) { memcpy(out_name, request.ifr_name, IFNAMSIZ); out_name[IFNAMSIZ - 1] = 0; }
    if (out_flags != NULL) *out_flags = (unsigned short)request.ifr_flags;
    return 0;
}

/// Runs one SIOC* request on an AF_INET datagram socket, as ip(8)'s older cousins do.
static int interface_request(unsigned long code, struct ifreq *request) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    int result = ioctl(sock, code, request);
    int saved = errno;
    close(sock);
    errno = saved;
    return result;
}

int clinux_if_set_ipv4(const char *name, uint32_t address_be, uint32_t netmask_be) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    struct sockaddr_in *in = (struct sockaddr_in *)&request.ifr_addr;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = address_be;
    if (interface_request(SIOCSIFADDR, &request) != 0) return -1;
    in = (struct sockaddr_in *)&request.ifr_netmask;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = netmask_be;
    return interface_request(SIOCSIFNETMASK, &request);
}

int clinux_if_set_up(const char *name) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    if (interface_request(SIOCGIFFLAGS, &request) != 0) return -1;
    request.ifr_flags |= IFF_UP | IFF_RUNNING;
    return interface_request(SIOCSIFFLAGS, &request);
}

int clinux_if_set_hwaddr(const char *name, const uint8_t *mac) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    request.ifr_hwaddr.sa_family = 1; // ARPHRD_ETHER
    memcpy(request.ifr_hwaddr.sa_data, mac, 6);
    return interface_request(SIOCSIFHWADDR, &request);
}

int clinux_if_get_hwaddr(const char *name, uint8_t *mac) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    if (interface_request(SIOCGIFHWADDR, &request) != 0) return -1;
    memcpy(mac, request.ifr_hwaddr.sa_data, 6);
    return 0;
}

int clinux_if_set_mtu(const char *name, int mtu) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    request.ifr_mtu = mtu;
    return interface_request(SIOCSIFMTU, &request);
}

int clinux_if_get_mtu(const char *name, int *mtu) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (copy_name(&request, name) != 0) return -1;
    if (interface_request(SIOCGIFMTU, &request) != 0) return -1;
    *mtu = request.ifr_mtu;
    return 0;
}

const unsigned long IOCTL_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
const unsigned long IOCTL_TUNSETOFFLOAD = TUNSETOFFLOAD;
