# Pure-Python float work: a Mandelbrot set on a grid and a Leibniz series.
import sys
n = int(sys.argv[1])
side = max(int((n / 20) ** 0.5), 4)
inside = 0
for yi in range(side):
    ci = -1.2 + 2.4 * yi / side
    for xi in range(side):
        cr = -2.0 + 2.6 * xi / side
        zr = zi = 0.0
        k = 0
        while k < 20 and zr * zr + zi * zi < 4.0:
            zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
            k += 1
        inside += k == 20
acc = 0.0
for i in range(n // 4):
    acc += (-1.0) ** i / (2 * i + 1)
print(side, inside, "%.9f" % (4 * acc))
