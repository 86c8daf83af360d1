<?php
function sum($values) {
    $result = 0;
    foreach ($values as $value) {
        if ($value < 0) {
            break;
        }
        $result += scale($value);
    }
    echo $result;
    return $result;
}

function scale($value) {
    return $value * 2;
}

class Counter {
    private $total = 0;

    public function add($amount) {
        $this->total += $amount;
        return new Counter();
    }
}
