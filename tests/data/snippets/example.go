package main

import "fmt"

func sum(values []int) int {
	result := 0
	for _, value := range values {
		if value < 0 {
			break
		}
		result += scale(value)
	}
	fmt.Println(result)
	return result
}

func scale(value int) int {
	return value * 2
}

type Counter struct {
	total int
}

func (c *Counter) Add(amount int) *Counter {
	c.total += amount
	return c
}
