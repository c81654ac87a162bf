/*
 * vpn-relay: runs inside a vm activity's container and joins it to a requestor's VPN.
 *
 *     vpn-relay IFNAME ADDRESS NETMASK MTU
 *
 * Creates tun device IFNAME with ADDRESS/NETMASK (the kernel adds the route to the
 * network), then relays IP packets between the device and its stdin/stdout, each packet
 * framed by a 2-byte big-endian length. The exe-unit on the host holds the other end (a
 * `docker exec` with stdin attached) and hands the packets to the node, which carries them
 * to the node of the destination address. A zero-length frame on stdout says the device
 * is up. It exits when stdin closes. Built static (see build.sh): images need nothing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "vpn-relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1: read n bytes; 0: end of stream; -1: error */
static int read_all(int fd, unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r == 0) return 0;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 1;
}

static void set_address(int s, struct ifreq *ifr, unsigned long request, const char *text, const char *what) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr->ifr_addr;
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, text, &sin->sin_addr) != 1) {
        fprintf(stderr, "vpn-relay: %s %s is not an IPv4 address\n", what, text);
        exit(2);
    }
    if (ioctl(s, request, ifr) < 0) die(what);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: vpn-relay IFNAME ADDRESS NETMASK MTU\n");
        return 2;
    }
    int tun = open("/dev/net/tun", O_RDWR);
    if (tun < 0) die("open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) die("socket");
    set_address(s, &ifr, SIOCSIFADDR, argv[2], "address");
    set_address(s, &ifr, SIOCSIFNETMASK, argv[3], "netmask");
    ifr.ifr_mtu = atoi(argv[4]);
    if (ioctl(s, SIOCSIFMTU, &ifr) < 0) die("mtu");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("get flags");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("up");
    close(s);

    static unsigned char buf[2 + 65536];
    buf[0] = buf[1] = 0;
    if (write_all(1, buf, 2) < 0) die("ready");
    struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = tun, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (fds[1].revents & POLLIN) {
            ssize_t n = read(tun, buf + 2, 65535);
            if (n < 0 && errno != EINTR && errno != EAGAIN) die("read tun");
            if (n > 0) {
                buf[0] = (unsigned char)(n >> 8);
                buf[1] = (unsigned char)(n & 0xff);
                if (write_all(1, buf, (size_t)n + 2) < 0) return 0; /* the exe-unit is gone */
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            unsigned char head[2];
            static unsigned char packet[65536];
            int got = read_all(0, head, 2);
            if (got <= 0) return 0;
            size_t len = ((size_t)head[0] << 8) | head[1];
            if (len == 0) continue;
            if (read_all(0, packet, len) <= 0) return 0;
            if (write(tun, packet, len) < 0 && errno != EINVAL && errno != EIO) {
                /* a packet the kernel refuses is dropped, as a network would */
            }
        }
    }
}
