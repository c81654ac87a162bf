/* Word, line and byte count of a file, like `wc`, for the wasmtime exe-unit tests.
 *
 *     wc INPUT [OUTPUT]
 *
 * INPUT is read through a pre-opened directory (say /input/data.txt); the result
 * "<lines> <words> <bytes>\n" goes to stdout and, when OUTPUT is given, to that file
 * (in a pre-opened writable directory, say /output/counts.txt).
 * Exit codes: 0 ok, 2 usage, 3 cannot open or read INPUT, 4 cannot write OUTPUT.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s INPUT [OUTPUT]\n", argc > 0 ? argv[0] : "wc");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        fprintf(stderr, "wc: cannot open %s: %s\n", argv[1], strerror(errno));
        return 3;
    }
    unsigned long long lines = 0, words = 0, bytes = 0;
    int in_word = 0;
    unsigned char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        for (size_t i = 0; i < n; i++) {
            unsigned char c = buf[i];
            bytes++;
            if (c == '\n') lines++;
            if (isspace(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
    }
    if (ferror(in)) {
        fprintf(stderr, "wc: cannot read %s: %s\n", argv[1], strerror(errno));
        fclose(in);
        return 3;
    }
    fclose(in);

    printf("%llu %llu %llu\n", lines, words, bytes);
    if (argc == 3) {
        FILE *out = fopen(argv[2], "wb");
        if (!out) {
            fprintf(stderr, "wc: cannot create %s: %s\n", argv[2], strerror(errno));
            return 4;
        }
        int bad = fprintf(out, "%llu %llu %llu\n", lines, words, bytes) < 0;
        bad |= fclose(out) != 0;
        if (bad) {
            fprintf(stderr, "wc: cannot write %s: %s\n", argv[2], strerror(errno));
            return 4;
        }
    }
    return 0;
}
