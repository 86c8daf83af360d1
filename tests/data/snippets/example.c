#include <stdio.h>

struct counter {
    int total;
};

static int scale(int value) {
    return value * 2;
}

int sum(const int *values, int count) {
    int result = 0;
    for (int i = 0; i < count; i++) {
        if (values[i] < 0) {
            break;
        }
        result += scale(values[i]);
    }
    printf("%d\n", result);
    return result;
}

void record(struct counter *counter, int value) {
    counter->total = value;
}
