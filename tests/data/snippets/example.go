package main

import "fmt"

func sum(values []int) int {
	result := 0
	for _, value := range values {
		result += value
	}
	fmt.Println(result)
	return result
}
