import java.util.List;

public class Example {
    private int total;

    public int sum(List<Integer> values) {
        int result = 0;
        for (int value : values) {
            if (value < 0) {
                break;
            }
            result += value;
        }
        total = scale(result);
        return result;
    }

    private static int scale(int value) {
        return value * 2;
    }

    public Example copy() {
        Example other = new Example();
        other.total = this.total;
        return other;
    }
}
