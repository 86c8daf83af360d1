import java.util.List;

public class Example {
    private int total;

    public int sum(List<Integer> values) {
        int result = 0;
        for (int value : values) {
            result += value;
        }
        total = result;
        return result;
    }
}
