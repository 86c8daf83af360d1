#include <vector>

class Accumulator {
public:
    int sum(const std::vector<int>& values) {
        int result = 0;
        for (int value : values) {
            if (value < 0) {
                break;
            }
            result += scale(value);
        }
        return result;
    }

    int scale(int value) {
        this->total += value;
        return value * 2;
    }

private:
    int total = 0;
};

Accumulator make() {
    Accumulator accumulator;
    return accumulator;
}
