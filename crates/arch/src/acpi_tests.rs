//! Tests for the ACPI tables: read them back from guest memory, check
//! checksums and contents, and have `iasl` disassemble each one.

use super::*;
use crate::testutil::TempDir;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn guest() -> GuestMemoryMmap {
    // A small constant memory size; from_ranges cannot fail.
    GuestMemoryMmap::from_ranges(&crate::memory::ram_regions(64 * MIB)).expect("test memory")
}

fn read(gm: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    gm.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A system description table at `addr`, its length taken from its header.
fn table(gm: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let header = read(gm, addr, 36);
    read(gm, addr, u32_at(&header, 4) as usize)
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// All tables by signature, found by walking RSDP -> XSDT -> FADT.
struct Tables {
    rsdp: Vec<u8>,
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt: Vec<u8>,
    facs: Vec<u8>,
    addrs: Vec<u64>,
}

fn walk(gm: &GuestMemoryMmap, rsdp_addr: GuestAddress) -> Tables {
    let rsdp = read(gm, rsdp_addr.0, 36);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = table(gm, xsdt_addr);
    assert_eq!(&xsdt[0..4], b"XSDT");
    let entries: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(&xsdt, o))
        .collect();
    let mut fadt = None;
    let mut madt = None;
    for &e in &entries {
        let t = table(gm, e);
        match &t[0..4] {
            b"FACP" => fadt = Some(t),
            b"APIC" => madt = Some(t),
            other => panic!("unexpected table {other:?}"),
        }
    }
    let fadt = fadt.expect("xsdt lists a fadt");
    let dsdt_addr = u64_at(&fadt, 140);
    let facs_addr = u64_at(&fadt, 132);
    let facs = read(gm, facs_addr, 64);
    let dsdt = table(gm, dsdt_addr);
    let mut addrs = vec![rsdp_addr.0, xsdt_addr, dsdt_addr, facs_addr];
    addrs.extend(entries);
    Tables {
        rsdp,
        xsdt,
        fadt,
        madt: madt.expect("xsdt lists a madt"),
        dsdt,
        facs,
        addrs,
    }
}

#[test]
fn checksums_are_valid_in_guest_memory() {
    let gm = guest();
    let rsdp = create_acpi_tables(&gm, &AcpiConfig { cpus: 2 }).unwrap();
    assert_eq!(rsdp, GuestAddress(mem::ACPI_START));
    let t = walk(&gm, rsdp);
    assert_eq!(sum(&t.rsdp[0..20]), 0, "rsdp v1 checksum");
    assert_eq!(sum(&t.rsdp), 0, "rsdp extended checksum");
    assert_eq!(t.rsdp[15], 2, "rsdp revision");
    for (name, tbl) in [
        ("xsdt", &t.xsdt),
        ("fadt", &t.fadt),
        ("madt", &t.madt),
        ("dsdt", &t.dsdt),
    ] {
        assert_eq!(sum(tbl), 0, "{name} checksum");
    }
    assert_eq!(&t.facs[0..4], b"FACS");
}

#[test]
fn tables_stay_inside_the_acpi_window() {
    let gm = guest();
    let t = walk(
        &gm,
        create_acpi_tables(&gm, &AcpiConfig { cpus: MAX_CPUS }).unwrap(),
    );
    for a in &t.addrs {
        assert!((mem::ACPI_START..mem::ACPI_END).contains(a), "{a:#x}");
    }
    let facs_addr = u64_at(&t.fadt, 132);
    assert_eq!(facs_addr % 64, 0);
}

#[test]
fn madt_has_one_lapic_per_cpu_and_the_ioapic() {
    for cpus in [1usize, 2, 7, 64] {
        let gm = guest();
        let t = walk(&gm, create_acpi_tables(&gm, &AcpiConfig { cpus }).unwrap());
        let m = &t.madt;
        assert_eq!(u32_at(m, 36), mem::LAPIC_START as u32);
        assert_eq!(u32_at(m, 40) & 1, 1, "pcat compat");
        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        let mut overrides = Vec::new();
        let mut nmis = 0;
        let mut off = 44;
        while off < m.len() {
            let (kind, len) = (m[off], m[off + 1] as usize);
            assert!(len >= 2 && off + len <= m.len());
            match kind {
                0 => lapics.push((m[off + 2], m[off + 3], u32_at(m, off + 4))),
                1 => ioapics.push((m[off + 2], u32_at(m, off + 4), u32_at(m, off + 8))),
                2 => overrides.push((
                    m[off + 3],
                    u32_at(m, off + 4),
                    u16::from_le_bytes([m[off + 8], m[off + 9]]),
                )),
                4 => {
                    assert_eq!(m[off + 5], 1, "nmi on lint1");
                    nmis += 1;
                }
                k => panic!("unexpected madt entry {k}"),
            }
            off += len;
        }
        assert_eq!(lapics.len(), cpus);
        for (i, l) in lapics.iter().enumerate() {
            assert_eq!(*l, (i as u8, i as u8, 1), "lapic {i} uid, id, enabled");
        }
        assert_eq!(ioapics, vec![(cpus as u8, mem::IOAPIC_START as u32, 0)]);
        assert_eq!(overrides, vec![(0, 2, 0x5), (9, 9, 0xd)]);
        assert_eq!(nmis, 1);
    }
}

#[test]
fn fadt_points_at_the_fixed_hardware() {
    let gm = guest();
    let t = walk(
        &gm,
        create_acpi_tables(&gm, &AcpiConfig { cpus: 1 }).unwrap(),
    );
    let f = &t.fadt;
    assert_eq!(f[8], 6, "fadt major revision");
    assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "sci_int");
    assert_eq!(u32_at(f, 56), 0x600, "pm1a_evt_blk");
    assert_eq!(u32_at(f, 64), 0x604, "pm1a_cnt_blk");
    assert_eq!(u32_at(f, 76), 0x608, "pm_tmr_blk");
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4), "pm1 evt/cnt, tmr lengths");
    let boot_arch = u16::from_le_bytes([f[109], f[110]]);
    assert_eq!(boot_arch & 0x2, 0x2, "8042 present");
    let flags = u32_at(f, 112);
    assert_eq!(flags & (1 << 20), 0, "not hardware reduced");
    assert_eq!(
        flags & 0x435,
        0x435,
        "wbinvd, proc_c1, buttons, reset_reg_sup"
    );
    // RESET_REG: system I/O, 8 bits, at the reset port; value 6.
    assert_eq!((f[116], f[117]), (1, 8));
    assert_eq!(u64_at(f, 120), 0x60c);
    assert_eq!(f[128], 6);
}

#[test]
fn dsdt_names_the_devices() {
    let gm = guest();
    let t = walk(
        &gm,
        create_acpi_tables(&gm, &AcpiConfig { cpus: 1 }).unwrap(),
    );
    let body = &t.dsdt[36..];
    for name in [
        &b"_S5_"[..],
        b"PCI0",
        b"COM1",
        b"RTC_",
        b"KBD_",
        b"_CRS",
        b"_BBN",
        b"_SEG",
    ] {
        assert!(
            body.windows(4).any(|w| w == name),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn bad_cpu_counts_are_refused() {
    let gm = guest();
    assert!(matches!(
        create_acpi_tables(&gm, &AcpiConfig { cpus: 0 }),
        Err(AcpiError::BadCpuCount(0))
    ));
    assert!(matches!(
        create_acpi_tables(&gm, &AcpiConfig { cpus: MAX_CPUS + 1 }),
        Err(AcpiError::BadCpuCount(255))
    ));
}

#[test]
fn memory_without_the_bios_area_is_an_error() {
    let gm = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8000)]).unwrap();
    assert!(matches!(
        create_acpi_tables(&gm, &AcpiConfig { cpus: 1 }),
        Err(AcpiError::Write(_))
    ));
}

fn iasl_available() -> bool {
    Command::new("iasl").arg("-v").output().is_ok()
}

/// Runs `iasl` with `args` in `dir`; returns its combined output after
/// asserting it succeeded.
fn iasl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("iasl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run iasl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl {args:?} failed:\n{text}");
    text
}

/// Whether this `iasl` can disassemble a binary RSDP. Version 20200925
/// (Debian 12) cannot, not even the one its own `-T RSDP` template
/// compiles to: it reads the RSDP's "PTR " as a table length.
fn iasl_disassembles_rsdp(dir: &std::path::Path, file: &str) -> bool {
    let out = Command::new("iasl")
        .args(["-d", file])
        .current_dir(dir)
        .output()
        .expect("run iasl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("does not contain a valid ACPI table") {
        return false;
    }
    assert!(out.status.success(), "iasl -d {file} failed:\n{text}");
    true
}

/// Checks an RSDP with iasl the other way round: writes its fields as a
/// data-table source, compiles that, and expects our exact bytes back
/// (iasl computes both checksums itself).
fn rsdp_round_trip(dir: &std::path::Path, rsdp: &[u8]) {
    let oem = String::from_utf8_lossy(&rsdp[9..15]);
    let src = format!(
        "[0008] Signature : \"RSD PTR \"\n[0001] Checksum : 00\n[0006] Oem ID : \"{oem}\"\n\
         [0001] Revision : {:02X}\n[0004] RSDT Address : {:08X}\n[0004] Length : {:08X}\n\
         [0008] XSDT Address : {:016X}\n[0001] Extended Checksum : 00\n[0003] Reserved : 000000\n",
        rsdp[15],
        u32_at(rsdp, 16),
        u32_at(rsdp, 20),
        u64_at(rsdp, 24)
    );
    std::fs::write(dir.join("rsdp.asl"), src).unwrap();
    let out = iasl(dir, &["rsdp.asl"]);
    assert!(
        out.contains(" 0 Errors"),
        "rsdp source does not compile:\n{out}"
    );
    let compiled = std::fs::read(dir.join("rsdp.aml")).unwrap();
    assert_eq!(compiled, rsdp, "iasl's rsdp differs from ours");
}

#[test]
fn iasl_disassembles_every_table() {
    if !iasl_available() {
        panic!("\n\n*** iasl not installed: apt-get install acpica-tools ***\n\n");
    }
    let gm = guest();
    let t = walk(
        &gm,
        create_acpi_tables(&gm, &AcpiConfig { cpus: 4 }).unwrap(),
    );
    let dir = TempDir::new();
    let files = [
        ("rsdp", &t.rsdp),
        ("xsdt", &t.xsdt),
        ("facp", &t.fadt),
        ("apic", &t.madt),
        ("dsdt", &t.dsdt),
        ("facs", &t.facs),
    ];
    for (name, bytes) in files {
        let file = format!("{name}.dat");
        std::fs::write(dir.path.join(&file), bytes).unwrap();
        // For a human look at the tables: ARCH_ACPI_DUMP_DIR=/some/dir.
        if let Some(keep) = std::env::var_os("ARCH_ACPI_DUMP_DIR") {
            std::fs::write(std::path::Path::new(&keep).join(&file), bytes).unwrap();
        }
        if name == "rsdp" && !iasl_disassembles_rsdp(&dir.path, &file) {
            rsdp_round_trip(&dir.path, bytes);
            continue;
        }
        let out = iasl(&dir.path, &["-d", &file]);
        let dsl = std::fs::read_to_string(dir.path.join(format!("{name}.dsl"))).unwrap_or_default();
        for bad in ["Error", "error", "Invalid", "incorrect", "Unknown"] {
            assert!(!out.contains(bad), "iasl -d {file} says {bad}:\n{out}");
            assert!(!dsl.contains(bad), "{name}.dsl contains {bad}:\n{dsl}");
        }
        assert!(!dsl.is_empty(), "iasl wrote no {name}.dsl:\n{out}");
    }
    // The disassembled DSDT must also compile back.
    let dsl = std::fs::read_to_string(dir.path.join("dsdt.dsl")).unwrap();
    for hid in ["PNP0A03", "PNP0501", "PNP0B00", "PNP0303"] {
        assert!(dsl.contains(hid), "dsdt lacks {hid}:\n{dsl}");
    }
    let out = iasl(&dir.path, &["-p", "recompiled", "dsdt.dsl"]);
    assert!(
        out.contains(" 0 Errors"),
        "dsdt does not recompile cleanly:\n{out}"
    );
}

/// ACPICA itself (acpiexec, same package as iasl) loads the tables, builds
/// the namespace from the DSDT and evaluates objects in it.
#[test]
fn acpiexec_loads_the_namespace() {
    if Command::new("acpiexec").arg("-v").output().is_err() {
        panic!("\n\n*** acpiexec not installed: apt-get install acpica-tools ***\n\n");
    }
    let gm = guest();
    let t = walk(
        &gm,
        create_acpi_tables(&gm, &AcpiConfig { cpus: 2 }).unwrap(),
    );
    let dir = TempDir::new();
    for (name, bytes) in [
        ("facp", &t.fadt),
        ("dsdt", &t.dsdt),
        ("apic", &t.madt),
        ("xsdt", &t.xsdt),
    ] {
        std::fs::write(dir.path.join(format!("{name}.dat")), bytes).unwrap();
    }
    let out = Command::new("acpiexec")
        .args([
            "-b",
            "evaluate \\_S5; evaluate \\_SB.PCI0._HID; evaluate \\_SB.KBD._CRS",
        ])
        .args(["facp.dat", "dsdt.dat", "apic.dat", "xsdt.dat"])
        .current_dir(&dir.path)
        .output()
        .expect("run acpiexec");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 ACPI AML tables successfully acquired and loaded"),
        "{text}"
    );
    assert!(
        text.contains("[Integer] = 0000000000000005"),
        "_S5 SLP_TYPa:\n{text}"
    );
    // EisaId("PNP0A03") as ACPICA prints the integer.
    assert!(
        text.contains("[Integer] = 00000000030AD041"),
        "PCI0 _HID:\n{text}"
    );
    for bad in [
        "ACPI Error",
        "ACPI Warning",
        "ACPI Exception",
        "Could not",
        "AE_NOT_FOUND",
    ] {
        assert!(!text.contains(bad), "acpiexec reports {bad}:\n{text}");
    }
}
