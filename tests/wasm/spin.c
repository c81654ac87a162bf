/* A cpu-bound loop: N rounds (argv[1], default 100000000) of a 64-bit xorshift
 * generator with no system calls, then prints "rounds=N checksum=X". Used to
 * calibrate fuel per cpu-second and to hit the cpu limit. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    unsigned long long rounds = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000ULL;
    uint64_t x = 0x9E3779B97F4A7C15ULL, sum = 0;
    for (unsigned long long i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum += x >> 32;
    }
    printf("rounds=%llu checksum=%016" PRIx64 "\n", rounds, sum);
    return 0;
}
