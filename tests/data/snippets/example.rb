class Accumulator
  def sum(values)
    result = 0
    values.each do |value|
      break if value < 0
      result += scale(value)
    end
    @total = result
    puts result
    return result
  end

  def scale(value)
    value * 2
  end

  def total
    @total
  end
end
