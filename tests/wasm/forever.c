/* Never ends. Without arguments it spins on the cpu; with "sleep" it sleeps
 * 50 ms at a time in a host call (poll_oneoff), which epoch interruption can
 * only stop between two sleeps. */
#include <stdio.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    int sleeping = argc > 1 && strcmp(argv[1], "sleep") == 0;
    printf("forever: %s\n", sleeping ? "sleeping" : "spinning");
    fflush(stdout);
    volatile unsigned long long ticks = 0; /* volatile: the loop must not be optimised away */
    for (;;) {
        if (sleeping) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        ticks++;
    }
}
