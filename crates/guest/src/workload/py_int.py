# Pure-Python integer work: an LCG with modular sums, then big integers.
import sys
n = int(sys.argv[1])
x, s = 1, 0
for i in range(n):
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    s += x % 97 ^ (i & 15)
f = 1
for i in range(2, n // 100 + 2):
    f *= i
print(s, f.bit_length(), f % 1000000007)
