/* Traps on purpose: "unreachable" (default) executes the unreachable instruction,
 * "div0" divides an integer by zero, "oob" reads far outside linear memory. */
#include <stdio.h>
#include <string.h>

/* volatile so that clang cannot see the values and fold the trap away at -O2 */
static volatile int zero = 0;
static volatile unsigned int far_away = 0xFFFFFFF0u;

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "unreachable";
    printf("trap: %s\n", kind);
    fflush(stdout);
    if (strcmp(kind, "div0") == 0) {
        return 10 / zero;
    }
    if (strcmp(kind, "oob") == 0) {
        return *(volatile int *)(unsigned long)far_away;
    }
    __builtin_trap();
}
