import math


def circle_area(radius):
    if radius < 0:
        raise ValueError("negative radius")
    area = math.pi * radius ** 2
    return area


class Shape:
    def __init__(self, name):
        self.name = name

    def describe(self):
        return f"{self.name} with area {self.area()}"


class Accumulator:
    def __init__(self):
        self.total = 0

    def sum(self, values):
        result = 0
        for value in values:
            if value < 0:
                break
            result += scale(value)
        self.total = result
        return result


def scale(value):
    return value * 2
