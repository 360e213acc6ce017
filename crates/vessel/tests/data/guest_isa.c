/*
 * Integer and floating-point kernels for crates/vessel/tests/guest_isa.rs:
 * the same static binary runs on the host and in the guest, and each
 * kernel prints one line "NAME: CHECKSUM" (FNV-1a over the result bits and,
 * for floating point, the exception flags the work raised), so any
 * difference in any result bit shows.
 *
 * Built with -march=x86-64-v3 it runs the x86-64-v2 and v3 kernels
 * (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE, and every SSE intrinsic comes
 * out VEX-encoded); with -march=x86-64-v2 only the v2 ones. The kernels
 * use intrinsics, so the instructions are certain (the test checks the
 * disassembly for a few), on inputs computed at run time from a volatile
 * seed, so nothing is folded at compile time.
 *
 * `guest_isa extras` (in either build) runs the AES-NI, PCLMULQDQ and SHA kernels where
 * CPUID advertises the feature and prints "NAME: not advertised"
 * otherwise (they are not part of any x86-64 level).
 */
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define N 1024

static volatile uint64_t seed0 = 0x243f6a8885a308d3ull;
static uint64_t state;

static uint64_t next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* Doubles of every kind: ordinary, tiny (denormal), huge, halfway cases
 * for conversions, zeros, infinities and NaNs. */
static double any_double(void)
{
    uint64_t r = next();
    switch (r % 8) {
    case 0: return (double)(int64_t)(r >> 20) / 1024.0;        /* x.5 cases */
    case 1: { double d; uint64_t b = r >> 12; memcpy(&d, &b, 8); return d; } /* denormal */
    case 2: return (double)(int32_t)r + 0.5;
    case 3: { double d; uint64_t b = r; memcpy(&d, &b, 8); return d; }  /* any bits */
    default: return ((double)(r >> 11) / 9007199254740992.0 - 0.5) * 1e6;
    }
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void report(const char *name, uint64_t h)
{
    printf("%s: %016llx\n", name, (unsigned long long)h);
}

static uint32_t u32s[N], v32s[N];
static uint64_t u64s[N];
static double da[N], db[N], dc[N];
static float fa[N];

static void fill(void)
{
    state = seed0;
    for (int i = 0; i < N; i++) {
        u32s[i] = (uint32_t)next();
        v32s[i] = (uint32_t)next();
        u64s[i] = next();
        da[i] = any_double();
        db[i] = any_double();
        dc[i] = any_double();
        fa[i] = (float)any_double();
    }
}

/* ---- x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT ---- */

static void k_popcnt_crc32(void)
{
    uint64_t h = 0xcbf29ce484222325ull, crc = 0;
    for (int i = 0; i < N; i++) {
        uint64_t p = (uint64_t)_mm_popcnt_u64(u64s[i]);
        crc = _mm_crc32_u64(crc, u64s[i]);
        crc = _mm_crc32_u8((uint32_t)crc, (unsigned char)u32s[i]);
        h = fnv(h, &p, 8);
    }
    report("popcnt+crc32", fnv(h, &crc, 8));
}

static void k_ssse3_sse41(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i + 8 <= N; i += 4) {
        __m128i a = _mm_loadu_si128((const __m128i *)&u32s[i]);
        __m128i b = _mm_loadu_si128((const __m128i *)&v32s[i]);
        __m128i r = _mm_shuffle_epi8(a, _mm_and_si128(b, _mm_set1_epi8((char)0x8f)));
        r = _mm_add_epi32(r, _mm_hadd_epi16(a, b));
        r = _mm_xor_si128(r, _mm_maddubs_epi16(a, b));
        r = _mm_add_epi32(r, _mm_mullo_epi32(a, b));
        r = _mm_xor_si128(r, _mm_minpos_epu16(b));
        r = _mm_blendv_epi8(r, _mm_max_epi32(a, b), b);
        r = _mm_add_epi64(r, _mm_alignr_epi8(a, b, 5));
        int t = _mm_testz_si128(a, b);
        h = fnv(h, &r, 16);
        h = fnv(h, &t, 4);
    }
    report("ssse3+sse4.1-int", h);
}

static void k_sse42_strings(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i + 8 <= N; i += 4) {
        __m128i a = _mm_loadu_si128((const __m128i *)&u32s[i]);
        __m128i b = _mm_loadu_si128((const __m128i *)&v32s[i]);
        int x = _mm_cmpestri(a, (int)(u32s[i] % 17), b, (int)(v32s[i] % 17),
                             _SIDD_UBYTE_OPS | _SIDD_CMP_EQUAL_ANY);
        int y = _mm_cmpistri(a, b, _SIDD_UWORD_OPS | _SIDD_CMP_RANGES | _SIDD_MOST_SIGNIFICANT);
        __m128i m = _mm_cmpistrm(a, b, _SIDD_SBYTE_OPS | _SIDD_CMP_EQUAL_ORDERED | _SIDD_UNIT_MASK);
        __m128i g = _mm_cmpgt_epi64(a, b);
        h = fnv(h, &x, 4);
        h = fnv(h, &y, 4);
        h = fnv(h, &m, 16);
        h = fnv(h, &g, 16);
    }
    report("sse4.2-strings", h);
}

/* Float work under each MXCSR rounding control, then with DAZ and FTZ:
 * results and the exception flags raised. */
static void k_mxcsr_modes(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned saved = _mm_getcsr();
    for (unsigned mode = 0; mode < 6; mode++) {
        unsigned csr = 0x1f80 | ((mode & 3) << 13);
        if (mode == 4) csr |= 0x0040;          /* DAZ */
        if (mode == 5) csr |= 0x8000 | 0x0040; /* FTZ + DAZ */
        _mm_setcsr(csr);
        for (int i = 0; i + 2 <= N; i += 2) {
            __m128d a = _mm_loadu_pd(&da[i]), b = _mm_loadu_pd(&db[i]);
            __m128d q = _mm_div_pd(a, b);
            __m128d s = _mm_sqrt_pd(_mm_andnot_pd(_mm_set1_pd(-0.0), a));
            __m128d hs = _mm_hadd_pd(q, s);
            __m128d as = _mm_addsub_pd(a, q);
            __m128d rn = _mm_round_pd(a, _MM_FROUND_CUR_DIRECTION);
            __m128 f = _mm_cvtpd_ps(q);
            __m128 dp = _mm_dp_ps(f, _mm_movehdup_ps(f), 0xf1);
            __m128i c = _mm_cvtpd_epi32(a);
            __m128i t = _mm_cvttpd_epi32(b);
            long long si = _mm_cvtsd_si64(q);
            h = fnv(h, &q, 16); h = fnv(h, &s, 16); h = fnv(h, &hs, 16);
            h = fnv(h, &as, 16); h = fnv(h, &rn, 16); h = fnv(h, &f, 16);
            h = fnv(h, &dp, 16); h = fnv(h, &c, 16); h = fnv(h, &t, 16);
            h = fnv(h, &si, 8);
        }
        unsigned flags = _mm_getcsr() & 0x3f;
        h = fnv(h, &flags, 4);
    }
    _mm_setcsr(saved);
    report("mxcsr-rc-daz-ftz", h);
}

/* x87: each precision and rounding control, arithmetic, FSQRT, FPREM,
 * with the status word's flags. */
static void k_x87(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned short saved;
    __asm__ volatile("fnstcw %0" : "=m"(saved));
    for (unsigned pc = 0; pc < 4; pc++) {
        if (pc == 1) continue; /* reserved */
        for (unsigned rc = 0; rc < 4; rc++) {
            unsigned short cw = 0x037f & ~0x0f00;
            cw |= (unsigned short)(pc << 8 | rc << 10);
            __asm__ volatile("fnclex; fldcw %0" : : "m"(cw));
            long double acc = 1.0L;
            for (int i = 0; i < 64; i++) {
                long double a = (long double)da[i], b = (long double)db[i];
                acc = acc * a / (b == 0 ? 3.0L : b) + (long double)dc[i];
                long double r, s;
                __asm__("fsqrt" : "=t"(s) : "0"(a < 0 ? -a : a));
                __asm__("1: fprem; fnstsw %%ax; testb $4, %%ah; jnz 1b"
                        : "=t"(r) : "0"(a), "u"(b == 0 ? 7.0L : b) : "ax");
                h = fnv(h, &acc, 10);
                h = fnv(h, &s, 10);
                h = fnv(h, &r, 10);
            }
            unsigned short sw;
            __asm__ volatile("fnstsw %0" : "=m"(sw));
            sw &= 0x3f;
            h = fnv(h, &sw, 2);
        }
    }
    __asm__ volatile("fnclex; fldcw %0" : : "m"(saved));
    report("x87-pc-rc", h);
}

#ifdef __AVX2__
/* ---- x86-64-v3: AVX2, FMA, F16C, BMI1, BMI2, LZCNT, MOVBE ---- */

static void k_avx2_int(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    __m256i acc = _mm256_set1_epi32(1);
    for (int i = 0; i + 8 <= N; i += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)&u32s[i]);
        __m256i b = _mm256_loadu_si256((const __m256i *)&v32s[i]);
        __m256i r = _mm256_add_epi32(a, b);
        r = _mm256_xor_si256(r, _mm256_mullo_epi32(a, b));
        r = _mm256_add_epi32(r, _mm256_shuffle_epi8(a, b));
        r = _mm256_xor_si256(r, _mm256_shuffle_epi32(b, 0x1b));
        r = _mm256_add_epi32(r, _mm256_permutevar8x32_epi32(a, b));
        r = _mm256_xor_si256(r, _mm256_sllv_epi32(a, _mm256_and_si256(b, _mm256_set1_epi32(31))));
        r = _mm256_add_epi64(r, _mm256_permute4x64_epi64(a, 0x9c));
        r = _mm256_xor_si256(r, _mm256_srav_epi32(b, a));
        acc = _mm256_add_epi32(_mm256_mullo_epi32(acc, _mm256_set1_epi32(31)), r);
        h = fnv(h, &r, 32);
    }
    h = fnv(h, &acc, 32);
    report("avx2-int", h);
}

static void k_fma(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned saved = _mm_getcsr();
    for (unsigned rc = 0; rc < 4; rc++) {
        _mm_setcsr(0x1f80 | rc << 13);
        __m256d acc = _mm256_setzero_pd();
        for (int i = 0; i + 4 <= N; i += 4) {
            __m256d a = _mm256_loadu_pd(&da[i]), b = _mm256_loadu_pd(&db[i]);
            __m256d c = _mm256_loadu_pd(&dc[i]);
            __m256d r = _mm256_fmadd_pd(a, b, c);
            __m256d s = _mm256_fmsub_pd(a, c, b);
            __m256d t = _mm256_fnmadd_pd(b, c, r);
            acc = _mm256_fmadd_pd(acc, _mm256_set1_pd(0.5), t);
            __m128 fs = _mm_fmaddsub_ps(_mm256_cvtpd_ps(a), _mm256_cvtpd_ps(b), _mm256_cvtpd_ps(c));
            h = fnv(h, &r, 32); h = fnv(h, &s, 32); h = fnv(h, &t, 32);
            h = fnv(h, &fs, 16);
        }
        h = fnv(h, &acc, 32);
        unsigned flags = _mm_getcsr() & 0x3f;
        h = fnv(h, &flags, 4);
    }
    _mm_setcsr(saved);
    report("fma", h);
}

static void k_f16c(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i + 8 <= N; i += 8) {
        __m256 f = _mm256_loadu_ps(&fa[i]);
        __m128i half = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT);
        __m128i down = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEG_INF);
        __m256 back = _mm256_cvtph_ps(half);
        __m128 raw = _mm_cvtph_ps(_mm_loadu_si128((const __m128i *)&u32s[i]));
        h = fnv(h, &half, 16); h = fnv(h, &down, 16);
        h = fnv(h, &back, 32); h = fnv(h, &raw, 16);
    }
    report("f16c", h);
}

static void k_bmi(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < N; i++) {
        uint64_t a = u64s[i], b = u64s[(i + 1) % N];
        unsigned long long hi;
        uint64_t sh, ro, sa;
        __asm__("shrx %2, %1, %0" : "=r"(sh) : "r"(a), "r"(b));
        __asm__("rorx $17, %1, %0" : "=r"(ro) : "r"(a));
        __asm__("sarx %2, %1, %0" : "=r"(sa) : "r"(a), "r"(b));
        uint64_t r[13] = {
            _pdep_u64(a, b), _pext_u64(a, b), _bzhi_u64(a, (unsigned)b & 0xff),
            _mulx_u64(a, b, &hi), _andn_u64(a, b), _bextr_u64(a, (unsigned)b & 63, (unsigned)(b >> 8) & 63),
            _blsr_u64(a), _blsmsk_u64(a), _tzcnt_u64(a & b), _lzcnt_u64(a >> (b & 63)),
            sh, ro, sa,
        };
        uint32_t be;
        __asm__("movbe %1, %0" : "=r"(be) : "m"(u32s[i]));
        h = fnv(h, r, sizeof r);
        h = fnv(h, &hi, 8);
        h = fnv(h, &be, 4);
    }
    report("bmi1+bmi2+lzcnt+movbe", h);
}
#endif

/* ---- extras: AES-NI, PCLMULQDQ, SHA (outside the x86-64 levels) ---- */

__attribute__((target("aes"))) static void k_aes(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    __m128i key = _mm_loadu_si128((const __m128i *)u64s);
    for (int i = 0; i + 2 <= N; i += 2) {
        __m128i x = _mm_loadu_si128((const __m128i *)&u64s[i]);
        __m128i k2 = _mm_aeskeygenassist_si128(key, 0x1b);
        x = _mm_aesenc_si128(x, key);
        x = _mm_aesenclast_si128(x, k2);
        x = _mm_aesdec_si128(x, _mm_aesimc_si128(key));
        x = _mm_aesdeclast_si128(x, k2);
        key = _mm_xor_si128(key, x);
        h = fnv(h, &x, 16);
    }
    report("aes", h);
}

__attribute__((target("pclmul"))) static void k_pclmul(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i + 2 <= N; i += 2) {
        __m128i a = _mm_loadu_si128((const __m128i *)&u64s[i]);
        __m128i b = _mm_loadu_si128((const __m128i *)&u64s[(i + 7) % (N - 1)]);
        __m128i r0 = _mm_clmulepi64_si128(a, b, 0x00);
        __m128i r1 = _mm_clmulepi64_si128(a, b, 0x11);
        __m128i r2 = _mm_clmulepi64_si128(a, b, 0x10);
        h = fnv(h, &r0, 16); h = fnv(h, &r1, 16); h = fnv(h, &r2, 16);
    }
    report("pclmulqdq", h);
}

__attribute__((target("sha,sse4.1"))) static void k_sha(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    __m128i s0 = _mm_loadu_si128((const __m128i *)u64s);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&u64s[2]);
    for (int i = 0; i + 8 <= N; i += 8) {
        __m128i m0 = _mm_loadu_si128((const __m128i *)&u64s[i]);
        __m128i m1 = _mm_loadu_si128((const __m128i *)&u64s[i + 2]);
        __m128i m2 = _mm_loadu_si128((const __m128i *)&u64s[i + 4]);
        __m128i w = _mm_sha256msg1_epu32(m0, m1);
        w = _mm_sha256msg2_epu32(_mm_add_epi32(w, m2), m1);
        s1 = _mm_sha256rnds2_epu32(s1, s0, w);
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(w, 0x0e));
        __m128i e = _mm_sha1nexte_epu32(m0, m1);
        __m128i a = _mm_sha1rnds4_epu32(s0, e, 2);
        __m128i m = _mm_sha1msg2_epu32(_mm_sha1msg1_epu32(m0, m1), m2);
        h = fnv(h, &s0, 16); h = fnv(h, &s1, 16);
        h = fnv(h, &a, 16); h = fnv(h, &m, 16);
    }
    report("sha", h);
}

static int cpuid_bit(unsigned leaf, unsigned reg, unsigned bit)
{
    unsigned r[4];
    if (!__get_cpuid_count(leaf, 0, &r[0], &r[1], &r[2], &r[3]))
        return 0;
    return (r[reg] >> bit) & 1;
}

int main(int argc, char **argv)
{
    fill();
    if (argc > 1 && strcmp(argv[1], "extras") == 0) {
        /* CPUID.1:ECX.AES[25], .PCLMULQDQ[1]; CPUID.7.0:EBX.SHA[29]. */
        if (cpuid_bit(1, 2, 25)) k_aes(); else puts("aes: not advertised");
        if (cpuid_bit(1, 2, 1)) k_pclmul(); else puts("pclmulqdq: not advertised");
        if (cpuid_bit(7, 1, 29)) k_sha(); else puts("sha: not advertised");
        return 0;
    }
    k_popcnt_crc32();
    k_ssse3_sse41();
    k_sse42_strings();
    k_mxcsr_modes();
    k_x87();
#ifdef __AVX2__
    k_avx2_int();
    k_fma();
    k_f16c();
    k_bmi();
#endif
    return 0;
}
