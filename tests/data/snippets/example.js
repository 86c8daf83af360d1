function sum(values) {
  let result = 0;
  for (const value of values) {
    if (value < 0) {
      break;
    }
    result += scale(value);
  }
  console.log(result);
  return result;
}

function scale(value) {
  return value * 2;
}

class Counter {
  constructor() {
    this.total = 0;
  }

  add(amount) {
    this.total += amount;
    return new Counter();
  }
}
