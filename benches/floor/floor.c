/* The floor: a C libpcap read loop that reads every packet of a capture
 * file and touches nothing (what no sensor can beat on the same file).
 * Built by benches/compare: cc -O2 -o floor floor.c -lpcap */
#include <pcap/pcap.h>
#include <stdio.h>

int main(int argc, char **argv) {
    char err[PCAP_ERRBUF_SIZE];
    if (argc != 2) {
        fprintf(stderr, "usage: floor FILE\n");
        return 2;
    }
    pcap_t *p = pcap_open_offline(argv[1], err);
    if (!p) {
        fprintf(stderr, "floor: %s\n", err);
        return 2;
    }
    struct pcap_pkthdr *h;
    const u_char *d;
    unsigned long long n = 0, bytes = 0;
    int r;
    while ((r = pcap_next_ex(p, &h, &d)) == 1) {
        n++;
        bytes += h->caplen;
    }
    pcap_close(p);
    fprintf(stderr, "%llu packets, %llu bytes\n", n, bytes);
    return r == PCAP_ERROR_BREAK ? 0 : 1;
}
