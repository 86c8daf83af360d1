class Accumulator
  def sum(values)
    result = 0
    values.each do |value|
      result += value
    end
    puts result
    return result
  end
end
