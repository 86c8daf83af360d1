#include <vector>

class Accumulator {
public:
    int sum(const std::vector<int>& values) {
        int result = 0;
        for (int value : values) {
            result += value;
        }
        return result;
    }
};
