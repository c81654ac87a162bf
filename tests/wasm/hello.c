/* Prints its arguments, one per line as "argv[i]=...", then the environment
 * variable named by $HELLO_VAR (default GREETING) as "NAME=value" or "NAME unset". */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) {
        printf("argv[%d]=%s\n", i, argv[i]);
    }
    const char *name = getenv("HELLO_VAR");
    if (!name) name = "GREETING";
    const char *value = getenv(name);
    if (value) {
        printf("%s=%s\n", name, value);
    } else {
        printf("%s unset\n", name);
    }
    fprintf(stderr, "hello: done\n");
    return 0;
}
