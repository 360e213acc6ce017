# Pure-Python calls: recursion, methods, closures and generators.
import sys
n = int(sys.argv[1])
def fib(k):
    return k if k < 2 else fib(k - 1) + fib(k - 2)
class Acc:
    def __init__(self):
        self.total = 0
    def add(self, v):
        self.total += v
        return self
def adder(k):
    return lambda v: v + k
def gen(m):
    for i in range(m):
        yield i * 3
a = Acc()
plus = adder(5)
for i in range(n):
    a.add(plus(i & 255))
depth = 10
while (1 << depth) < n:
    depth += 1
print(a.total, fib(min(depth + 5, 27)), sum(gen(n // 4)))
