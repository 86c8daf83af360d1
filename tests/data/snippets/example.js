function sum(values) {
  let result = 0;
  for (const value of values) {
    result += value;
  }
  console.log(result);
  return result;
}
