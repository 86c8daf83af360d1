#include <stdio.h>

int sum(const int *values, int count) {
    int result = 0;
    for (int i = 0; i < count; i++) {
        result += values[i];
    }
    printf("%d\n", result);
    return result;
}
