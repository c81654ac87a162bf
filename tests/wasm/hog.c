/* Allocates memory 1 MiB at a time, touching every page, until malloc fails or
 * N MiB (argv[1], default 4096) are held. Prints "allocated=<MiB> MiB" as it goes
 * (every 16 MiB) and at the end, and exits 0 when it reached N, 1 when malloc failed.
 * With "abort" as argv[2] a failed malloc aborts instead (a trap, as Rust programs do). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024 * 1024)

/* Every block is linked into this list and summed at the end, so that clang cannot
 * prove the allocations dead and remove them (it does, at -O2, for unused malloc). */
struct block {
    struct block *next;
    char bytes[MIB - sizeof(struct block *)];
};
static struct block *volatile head = NULL;

static unsigned long checksum(void) {
    unsigned long sum = 0;
    for (struct block *b = head; b; b = b->next) sum += (unsigned char)b->bytes[sizeof b->bytes - 1];
    return sum;
}

int main(int argc, char **argv) {
    long target = argc > 1 ? strtol(argv[1], NULL, 10) : 4096;
    int abort_on_failure = argc > 2 && strcmp(argv[2], "abort") == 0;
    long held = 0;
    while (held < target) {
        struct block *block = malloc(sizeof *block);
        if (!block) {
            if (abort_on_failure) {
                printf("allocated=%ld MiB (malloc failed, aborting)\n", held);
                fflush(stdout);
                abort();
            }
            printf("allocated=%ld MiB (malloc failed) checksum=%lu\n", held, checksum());
            return 1;
        }
        memset(block->bytes, (int)(held & 0xff), sizeof block->bytes); /* touch every page */
        block->next = head;
        head = block;
        held++;
        if (held % 16 == 0) printf("allocated=%ld MiB\n", held);
    }
    printf("allocated=%ld MiB (target reached) checksum=%lu\n", held, checksum());
    return 0;
}
