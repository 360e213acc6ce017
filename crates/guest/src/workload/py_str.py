# Pure-Python string and dict work: make words, count them in a dict,
# join, split, format and sort.
import sys
n = int(sys.argv[1])
letters = "abcdefghijklmnopqrstuvwxyz"
words = []
x = 7
for i in range(n):
    x = (x * 69069 + 1) & 0xFFFFFFFF
    w = letters[x % 26] + letters[(x >> 5) % 26] + letters[(x >> 10) % 7]
    words.append(w + str(x % 13))
counts = {}
for w in words:
    counts[w] = counts.get(w, 0) + 1
text = " ".join(words)
parts = text.split(" ")
lines = ["%s=%d" % (k, v) for k, v in sorted(counts.items())]
upper = sum(1 for p in parts if p.upper().startswith("A"))
d = {}
for i, w in enumerate(parts):
    d[w[::-1] + str(i % 100)] = i
print(len(counts), len(lines), upper, len(d), lines[0], lines[-1])
