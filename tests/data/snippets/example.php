<?php
function sum($values) {
    $result = 0;
    foreach ($values as $value) {
        $result += $value;
    }
    echo $result;
    return $result;
}
