// blaster: the loopback UDP ceiling the benchmark driver (interop/bench)
// divides throughput rows by. One sender thread pushes datagrams of SIZE
// bytes to one receiver thread over 127.0.0.1 for SECONDS, as fast as the
// chosen syscalls allow, and the receiver counts what arrives:
//
//   mmsg    sendmmsg / recvmmsg, 64 datagrams per call
//   gso     sendmmsg of 64 KiB messages cut by the kernel (UDP_SEGMENT),
//           recvmmsg of single datagrams
//   gsogro  as gso, and the receiver coalesces (UDP_GRO) into 64 KiB reads
//
// No payload is touched: this is what the kernel path costs, the most any
// library on these sockets can reach. Output, one line:
//   RESULT mode=gso size=1400 sent_mb_s=... recv_mb_s=... recv_datagrams=...
// Loopback only. Build: cc -O2 -pthread -o blaster blaster.c
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define BATCH 64
#define BIG 65536

enum mode { MMSG, GSO, GSOGRO };

static enum mode mode;
static int size = 1400;
static int rx_fd;
static atomic_int sending_done;
static uint64_t rx_bytes, rx_datagrams;
static double rx_first, rx_last;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void *receiver(void *arg) {
  (void)arg;
  size_t buflen = mode == GSOGRO ? BIG : 2048;
  char *bufs = malloc(buflen * BATCH);
  char ctrl[BATCH][CMSG_SPACE(sizeof(int))];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  if (!bufs) die("malloc");
  for (;;) {
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs + (size_t)i * buflen;
      iov[i].iov_len = buflen;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = ctrl[i];
      msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
    }
    int n = recvmmsg(rx_fd, msgs, BATCH, 0, NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (atomic_load(&sending_done)) break;  // drained: 200 ms of silence
        continue;
      }
      if (errno == EINTR) continue;
      die("recvmmsg");
    }
    double t = now_s();
    if (rx_bytes == 0) rx_first = t;
    rx_last = t;
    for (int i = 0; i < n; i++) {
      unsigned len = msgs[i].msg_len;
      rx_bytes += len;
      // A coalesced read carries its segment size; count the datagrams.
      int seg = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c;
           c = CMSG_NXTHDR(&msgs[i].msg_hdr, c))
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO)
          memcpy(&seg, CMSG_DATA(c), sizeof seg);
      rx_datagrams += seg > 0 ? (len + (unsigned)seg - 1) / (unsigned)seg : 1;
    }
  }
  free(bufs);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: blaster mmsg|gso|gsogro SECONDS [SIZE [SOCKBUF]]\n");
    return 2;
  }
  if (!strcmp(argv[1], "mmsg")) mode = MMSG;
  else if (!strcmp(argv[1], "gso")) mode = GSO;
  else if (!strcmp(argv[1], "gsogro")) mode = GSOGRO;
  else {
    fprintf(stderr, "blaster: unknown mode %s\n", argv[1]);
    return 2;
  }
  double seconds = atof(argv[2]);
  if (argc > 3) size = atoi(argv[3]);
  int sockbuf = argc > 4 ? atoi(argv[4]) : 4 << 20;
  if (size < 1 || size > 1472 || seconds <= 0) {
    fprintf(stderr, "blaster: SIZE must be 1..1472 and SECONDS positive\n");
    return 2;
  }

  struct sockaddr_in addr = {.sin_family = AF_INET};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof addr;
  rx_fd = socket(AF_INET, SOCK_DGRAM, 0);
  int tx_fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (rx_fd < 0 || tx_fd < 0) die("socket");
  setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof sockbuf);
  setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof sockbuf);
  struct timeval to = {.tv_sec = 0, .tv_usec = 200000};
  setsockopt(rx_fd, SOL_SOCKET, SO_RCVTIMEO, &to, sizeof to);
  if (mode == GSOGRO) {
    int on = 1;
    if (setsockopt(rx_fd, SOL_UDP, UDP_GRO, &on, sizeof on) < 0) die("UDP_GRO");
  }
  if (bind(rx_fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (getsockname(rx_fd, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");
  if (connect(tx_fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");

  pthread_t th;
  if (pthread_create(&th, NULL, receiver, NULL)) die("pthread_create");

  // One message per call entry: BATCH datagrams (mmsg), or BATCH/8 runs of
  // as many whole datagrams as fit in 64 KiB (gso), each cut by the kernel.
  int per_msg = mode == MMSG ? 1 : (BIG - 1) / size;
  if (per_msg > 64) per_msg = 64;  // the kernel's UDP_MAX_SEGMENTS
  int entries = mode == MMSG ? BATCH : 8;
  char *payload = calloc((size_t)per_msg * size, 1);
  char ctrl[CMSG_SPACE(sizeof(uint16_t))];
  struct iovec iov = {.iov_base = payload, .iov_len = (size_t)per_msg * size};
  struct mmsghdr msgs[BATCH];
  if (!payload) die("calloc");
  memset(msgs, 0, sizeof msgs);
  memset(ctrl, 0, sizeof ctrl);
  if (mode != MMSG) {
    struct msghdr h = {.msg_control = ctrl, .msg_controllen = sizeof ctrl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)size;
    memcpy(CMSG_DATA(c), &seg, sizeof seg);
  }
  for (int i = 0; i < entries; i++) {
    msgs[i].msg_hdr.msg_iov = &iov;
    msgs[i].msg_hdr.msg_iovlen = 1;
    if (mode != MMSG) {
      msgs[i].msg_hdr.msg_control = ctrl;
      msgs[i].msg_hdr.msg_controllen = sizeof ctrl;
    }
  }

  uint64_t tx_bytes = 0;
  double t0 = now_s(), t1 = t0;
  while ((t1 = now_s()) - t0 < seconds) {
    int n = sendmmsg(tx_fd, msgs, (unsigned)entries, 0);
    if (n < 0) {
      if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) continue;
      die("sendmmsg");
    }
    tx_bytes += (uint64_t)n * per_msg * size;
  }
  atomic_store(&sending_done, 1);
  pthread_join(th, NULL);

  double rx_time = rx_last > rx_first ? rx_last - rx_first : 1e-9;
  printf("RESULT mode=%s size=%d sent_mb_s=%.1f recv_mb_s=%.1f recv_datagrams=%llu\n",
         argv[1], size, (double)tx_bytes / (t1 - t0) / 1e6, (double)rx_bytes / rx_time / 1e6,
         (unsigned long long)rx_datagrams);
  free(payload);
  close(tx_fd);
  close(rx_fd);
  return 0;
}
