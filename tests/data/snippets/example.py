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
