//! The x87 state images outside 64-bit mode, checked against this
//! host's CPU: a 32-bit compatibility-mode code segment at CPL3 (Linux's
//! `__USER32_CS`, selector 0x23) runs FDIV by zero (unmasked), FNSTENV
//! (28 bytes), FNSTENV with 66h (14 bytes), FXSAVE (no REX.W), FNSAVE
//! (108 bytes) and a 16-bit FLDENV of garbage followed by FXSAVE; the
//! engine's layouts of the same state must give the same bytes.
//!
//! The real-mode (and virtual-8086) layouts cannot run on this host;
//! their tests pin the engine's bytes to the SDM's figures 8-10 and
//! 8-12 (vol. 1, 8.1.10).

use super::*;

/// 64-bit entry at page offset 0, `rdi` = the page (below 4 GiB): saves
/// RSP at +0xff0, takes a stack at +0xfe0 and far-returns to +0x100 in
/// the 32-bit code segment 0x23.
const ENTER: &[u8] = &[
    0x53, // push rbx
    0x55, // push rbp
    0x48, 0x89, 0xa7, 0xf0, 0x0f, 0x00, 0x00, // mov [rdi+0xff0], rsp
    0x48, 0x8d, 0xa7, 0xe0, 0x0f, 0x00, 0x00, // lea rsp, [rdi+0xfe0]
    0x89, 0xfb, // mov ebx, edi
    0x48, 0x8d, 0x87, 0x00, 0x01, 0x00, 0x00, // lea rax, [rdi+0x100]
    0x6a, 0x23, // push 0x23
    0x50, // push rax
    0x48, 0xcb, // retfq
];

/// 64-bit code at +0x80, reached from the 32-bit code: the Rust stack
/// back, return.
const LEAVE: &[u8] = &[
    0x48, 0x8b, 0xa3, 0xf0, 0x0f, 0x00, 0x00, // mov rsp, [rbx+0xff0]
    0x5d, // pop rbp
    0x5b, // pop rbx
    0xc3, // ret
];

/// The 32-bit code at +0x100 (`ebx` = the page).
const BODY: &[u8] = &[
    0x6a, 0x2b, // push 0x2b (__USER_DS: DS is null in 64-bit mode)
    0x1f, // pop ds
    0xdb, 0xe3, // fninit
    0xd9, 0xab, 0x00, 0x08, 0x00, 0x00, // fldcw [ebx+0x800]
    0xd9, 0xeb, // fldpi
    0xd9, 0xe8, // fld1
    0xdc, 0xb3, 0x08, 0x08, 0x00, 0x00, // +0x10f: fdiv qword [ebx+0x808]
    0xd9, 0xb3, 0x00, 0x09, 0x00, 0x00, // fnstenv [ebx+0x900]
    0x66, 0xd9, 0xb3, 0x40, 0x09, 0x00, 0x00, // o16 fnstenv [ebx+0x940]
    0x0f, 0xae, 0x83, 0x00, 0x0a, 0x00, 0x00, // fxsave [ebx+0xa00]
    0xdd, 0xb3, 0x20, 0x08, 0x00, 0x00, // fnsave [ebx+0x820]
    0x66, 0xd9, 0xa3, 0x60, 0x09, 0x00, 0x00, // o16 fldenv [ebx+0x960]
    0x0f, 0xae, 0x83, 0x00, 0x0c, 0x00, 0x00, // fxsave [ebx+0xc00]
    0xdb, 0xe3, // fninit
    0x8d, 0x83, 0x80, 0x00, 0x00, 0x00, // lea eax, [ebx+0x80]
    0x6a, 0x33, // push 0x33
    0x50, // push eax
    0xcb, // retf
];

/// The 14 bytes the 16-bit FLDENV loads.
const GARBAGE16: [u8; 14] = [
    0xff, 0xff, // FCW
    0x01, 0x38, // FSW: TOP 7, IE
    0x6c, 0x1b, // tags: R1 and R4 empty
    0xef, 0xbe, // FIP offset
    0x34, 0x12, // FCS
    0x78, 0x56, // FDP offset
    0xcd, 0xab, // FDS
];

/// Runs [`BODY`] in compatibility mode and returns the page.
fn run_compat() -> Vec<u8> {
    // SAFETY: an anonymous private mapping of one page; the result is
    // checked before use.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    assert!((page as u64) < 1 << 32);
    // SAFETY: `page` is a fresh, writable 4096-byte mapping that nothing
    // else refers to.
    let mem = unsafe { std::slice::from_raw_parts_mut(page.cast::<u8>(), 4096) };
    mem[..ENTER.len()].copy_from_slice(ENTER);
    mem[0x80..0x80 + LEAVE.len()].copy_from_slice(LEAVE);
    mem[0x100..0x100 + BODY.len()].copy_from_slice(BODY);
    mem[0x800..0x802].copy_from_slice(&0x37bu16.to_le_bytes());
    mem[0x960..0x96e].copy_from_slice(&GARBAGE16);
    // FXSAVE's first image: what it leaves alone stays 0xee.
    mem[0xa00..0xc00].fill(0xee);
    // SAFETY: the page holds the code above: it switches to its own
    // stack inside the page, runs x87 instructions on the page's data
    // only (the x87 left empty by FNINIT, as the ABI wants between
    // calls; no waiting instruction runs while an exception is
    // pending), and returns to 64-bit mode with RBX, RBP and RSP as
    // they were, as a sysv64 function of one argument.
    let out = unsafe {
        let f: extern "sysv64" fn(u64) = std::mem::transmute(page);
        f(page as u64);
        mem.to_vec()
    };
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(page, 4096) };
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The state after FDIV by zero (ZE unmasked) and FNSTENV (which masks
/// every exception): TOP 6, ST(0) = 1, ST(1) = pi, FOP of FDIV m64
/// (DC /6 with ModR/M B3), FIP and FDP as 32-bit offsets.
fn expected(base: u64) -> Fpu {
    let mut f = Fpu {
        fcw: 0x37f,
        fsw: 0x3004,
        ftw: 0xc0,
        fop: 0x4b3,
        fip: base + 0x10f,
        fdp: base + 0x808,
        ..Fpu::default()
    };
    f.st[0][..10].copy_from_slice(&to_bytes((0x3fff << 64) | INT_BIT));
    f.st[1][..10].copy_from_slice(&to_bytes((0x4000 << 64) | 0xc90f_daa2_2168_c235));
    f
}

#[test]
fn compatibility_mode_images_match_the_host() {
    let mem = run_compat();
    let page = &mem[..];
    let base = {
        // FXSAVE's FIP is the page's address plus the FDIV's offset.
        let fip = u32::from_le_bytes([page[0xa08], page[0xa09], page[0xa0a], page[0xa0b]]);
        u64::from(fip) - 0x10f
    };
    assert_eq!(base % 4096, 0, "FIP {:#x}", base + 0x10f);
    let f = expected(base);

    // FXSAVE without REX.W: 32-bit FIP and FDP, FCS and FDS 0.
    let mut img = [0u8; 512];
    write_x87(&f, &mut img, false);
    assert_eq!(hex(&img[..24]), hex(&page[0xa00..0xa18]));
    assert_eq!(hex(&img[32..160]), hex(&page[0xa20..0xaa0]));
    // Outside 64-bit mode FXSAVE leaves bytes 288-511 (XMM8-15 and
    // beyond) alone, as the engine's `fxsave` does; the reserved bytes
    // of the x87 part and FCS/FDS are written as 0.
    assert!(page[0xa00 + 160 + 16 * 8..0xc00].iter().all(|&x| x == 0xee));
    let reserved = [5usize, 12, 13, 14, 15, 20, 21, 22, 23];
    assert!(reserved.iter().all(|&i| page[0xa00 + i] == 0));
    assert!((0..8).all(|j| page[0xa00 + 42 + 16 * j..0xa00 + 48 + 16 * j] == [0; 6]));
    let mut fx = [0u8; 512];
    fx.copy_from_slice(&page[0xa00..0xc00]);
    let mut g = Fpu::default();
    read_x87(&mut g, &fx, false);
    assert_eq!(
        (g.fcw, g.fsw, g.ftw, g.fop, g.fip, g.fdp, g.st),
        (f.fcw, f.fsw, f.ftw, f.fop, f.fip, f.fdp, f.st)
    );

    // FNSTENV, 28 bytes, taken before it masked the exceptions.
    let before = Fpu {
        fcw: 0x37b,
        fsw: 0xb084,
        ..f
    };
    let mut b = [0u8; 28];
    env_write(&before, &mut b, true, false);
    assert_eq!(hex(&b), hex(&page[0x900..0x91c]));
    // FNSTENV with 66h, 14 bytes: 16-bit offsets, selectors 0.
    let mut b = [0u8; 14];
    env_write(&f, &mut b, false, false);
    assert_eq!(hex(&b), hex(&page[0x940..0x94e]));
    // FNSAVE, 108 bytes: the 28-byte environment, then ST(0)-ST(7).
    assert_eq!(hex(&save_image(&f)), hex(&page[0x820..0x820 + 108]));

    // After FNSAVE (an FNINIT), a 16-bit FLDENV: FIP and FDP are the
    // 16-bit offsets (no selector), FOP is 0, TOP 7 makes the register
    // that held pi ST(0); FXSAVE shows it.
    let mut g = f;
    control::init(&mut g);
    env_read(&mut g, &GARBAGE16, false, false);
    let mut img = [0u8; 512];
    write_x87(&g, &mut img, false);
    assert_eq!(hex(&img[..24]), hex(&page[0xc00..0xc18]));
    assert_eq!(hex(&img[32..160]), hex(&page[0xc20..0xca0]));
}

/// A state with every pointer field distinct: FCW 0x37b, FSW with ES,
/// TOP 6, two valid registers, FOP 0x4b3.
fn pointers() -> Fpu {
    Fpu {
        fcw: 0x37b,
        fsw: 0xb084,
        fip: 0x1234_5678,
        fdp: 0x9abc_def0,
        ..expected(0)
    }
}

/// Figure 8-10: offset 12 holds FIP bits 15-0, offset 16 FOP in bits
/// 10-0 and FIP bits 31-16 in bits 27-12, offset 20 FDP bits 15-0,
/// offset 24 FDP bits 31-16 in bits 27-12. The reserved upper halves
/// of the 16-bit fields are ones, as the protected-mode layout's are on
/// the host.
#[test]
fn real_mode_32_bit_layout_follows_the_sdm() {
    let f = pointers();
    let mut b = [0u8; 28];
    env_write(&f, &mut b, true, true);
    let dwords: Vec<u32> = b
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        dwords,
        [
            0xffff_037b,
            0xffff_b084,
            0xffff_0fff,
            0xffff_5678,
            0x0123_44b3,
            0xffff_def0,
            0x09ab_c000
        ]
    );
    let mut g = Fpu::default();
    env_read(&mut g, &b, true, true);
    assert_eq!(
        (g.fcw, g.fsw, g.ftw, g.fop, g.fip, g.fdp),
        (0x37b, 0xb084, 0xc0, 0x4b3, 0x1234_5678, 0x9abc_def0)
    );
}

/// Figure 8-12: offset 6 FIP bits 15-0, offset 8 FOP in bits 10-0 and
/// FIP bits 19-16 in bits 15-12, offset 10 FDP bits 15-0, offset 12
/// FDP bits 19-16 in bits 15-12: 20-bit pointers.
#[test]
fn real_mode_16_bit_layout_follows_the_sdm() {
    let f = pointers();
    let mut b = [0u8; 14];
    env_write(&f, &mut b, false, true);
    let words: Vec<u16> = b
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        words,
        [0x037b, 0xb084, 0x0fff, 0x5678, 0x44b3, 0xdef0, 0xc000]
    );
    let mut g = Fpu::default();
    env_read(&mut g, &b, false, true);
    assert_eq!(
        (g.fcw, g.fsw, g.ftw, g.fop, g.fip, g.fdp),
        (0x37b, 0xb084, 0xc0, 0x4b3, 0x4_5678, 0xc_def0)
    );
}
