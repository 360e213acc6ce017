//! Kernel modules for the guest: which `.ko` files a set of wanted modules
//! needs (their dependencies, in load order), read from `modules.dep` when
//! the kernel package ships one, else from each module's own `.modinfo`
//! section (`depends=`), which is what depmod reads. Also writes the
//! `modules.dep` and `modules.alias` that busybox modprobe uses in the
//! guest, restricted to the modules we ship.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Modules the default guest ships: the virtio transports and devices
/// vessel provides, with everything they depend on.
pub const GUEST_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "virtio_console",
    "virtio_balloon",
    // `vessel run --image`: a tmpfs overlay over the read-only image disk.
    "overlay",
    "vmw_vsock_virtio_transport",
    // virtio-fs shared directories (vessel run -v); needs fuse.
    "virtiofs",
    // The emulated IDE disk (--disk PATH,if=ide): PIIX IDE, SCSI disks.
    "ata_piix",
    "sd_mod",
];

/// Upper bound on one module file, compressed or not.
const MAX_MODULE: u64 = 64 << 20;

/// Errors from finding and reading modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {0} not found in the kernel's module tree")]
    Unknown(String),
    #[error("module dependency cycle through {0}")]
    Cycle(String),
    #[error("modules.dep line {0} is malformed")]
    BadDepLine(usize),
    #[error("{0} is not an ELF64 module")]
    NotElf(String),
    #[error("{0} has no .modinfo section")]
    NoModinfo(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is over {MAX_MODULE} bytes")]
    TooLarge(PathBuf),
}

/// The module name for a file path: basename without `.ko[.xz|.zst|.gz]`,
/// dashes as underscores (the kernel treats them the same).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    stem.replace('-', "_")
}

fn canonical(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// Fields of a module's `.modinfo` section that we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
}

/// Reads `.modinfo` (NUL-separated `key=value` strings) from an ELF64
/// little-endian relocatable module. Every offset is bounds-checked.
pub fn parse_modinfo(what: &str, elf: &[u8]) -> Result<ModInfo, ModuleError> {
    let not_elf = || ModuleError::NotElf(what.to_string());
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(not_elf());
    }
    let u16_at = |o: usize| -> Option<usize> {
        Some(usize::from(u16::from_le_bytes(
            elf.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    let u32_at = |o: usize| -> Option<usize> {
        usize::try_from(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?)).ok()
    };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(
            elf.get(o..o.checked_add(8)?)?.try_into().ok()?,
        ))
        .ok()
    };
    let shoff = u64_at(0x28).ok_or_else(not_elf)?;
    let shentsize = u16_at(0x3a).ok_or_else(not_elf)?;
    let shnum = u16_at(0x3c).ok_or_else(not_elf)?;
    let shstrndx = u16_at(0x3e).ok_or_else(not_elf)?;
    if shentsize < 0x28 {
        return Err(not_elf());
    }
    // (name offset, file offset, size) of section `i`.
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(base)?, u64_at(base + 0x18)?, u64_at(base + 0x20)?))
    };
    let bytes = |off: usize, size: usize| elf.get(off..off.checked_add(size)?);
    let (_, str_off, str_size) = section(shstrndx).ok_or_else(not_elf)?;
    let names = bytes(str_off, str_size).ok_or_else(not_elf)?;
    let modinfo = (0..shnum)
        .filter_map(section)
        .find(|(name, _, _)| {
            names
                .get(*name..)
                .and_then(|n| n.split(|b| *b == 0).next())
                .is_some_and(|n| n == b".modinfo")
        })
        .and_then(|(_, off, size)| bytes(off, size))
        .ok_or_else(|| ModuleError::NoModinfo(what.to_string()))?;
    let mut info = ModInfo::default();
    for field in modinfo.split(|b| *b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        match field.split_once('=') {
            Some(("name", v)) => info.name = Some(canonical(v)),
            Some(("depends", v)) => {
                info.depends = v
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(canonical)
                    .collect()
            }
            Some(("alias", v)) => info.aliases.push(v.to_string()),
            _ => {}
        }
    }
    Ok(info)
}

/// Orders `roots` and everything they depend on so that each module comes
/// after its dependencies. `deps_of` gives a module's direct dependencies.
pub fn load_order(
    roots: &[String],
    mut deps_of: impl FnMut(&str) -> Result<Vec<String>, ModuleError>,
) -> Result<Vec<String>, ModuleError> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    let mut on_path = BTreeSet::new();
    for root in roots {
        // Explicit stack of (module, its deps, next dep index): no recursion
        // depth limit on long dependency chains.
        let mut stack: Vec<(String, Vec<String>, usize)> = Vec::new();
        let root = canonical(root);
        if done.contains(&root) {
            continue;
        }
        on_path.insert(root.clone());
        let deps = deps_of(&root)?;
        stack.push((root, deps, 0));
        while let Some((name, deps, next)) = stack.last_mut() {
            if let Some(dep) = deps.get(*next).map(|d| canonical(d)) {
                *next += 1;
                if done.contains(&dep) {
                    continue;
                }
                if !on_path.insert(dep.clone()) {
                    return Err(ModuleError::Cycle(dep));
                }
                let dep_deps = deps_of(&dep)?;
                stack.push((dep, dep_deps, 0));
            } else {
                let name = std::mem::take(name);
                stack.pop();
                on_path.remove(&name);
                done.insert(name.clone());
                order.push(name);
            }
        }
    }
    Ok(order)
}

/// Module name -> (path relative to the module directory, direct deps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulesDep {
    pub modules: BTreeMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    /// Parses depmod's `modules.dep` ("path: dep-path dep-path ...").
    /// depmod lists all transitive dependencies; that is fine for
    /// [`load_order`].
    pub fn parse(text: &str) -> Result<Self, ModuleError> {
        let mut modules = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or(ModuleError::BadDepLine(i + 1))?;
            if path.trim().is_empty() {
                return Err(ModuleError::BadDepLine(i + 1));
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (path.trim().to_string(), deps));
        }
        Ok(Self { modules })
    }

    /// Load order for `roots` and their dependencies.
    pub fn resolve(&self, roots: &[String]) -> Result<Vec<String>, ModuleError> {
        load_order(roots, |m| {
            self.modules
                .get(m)
                .map(|(_, deps)| deps.clone())
                .ok_or_else(|| ModuleError::Unknown(m.to_string()))
        })
    }
}

/// One module picked for the guest, uncompressed.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    /// Path below /lib/modules/RELEASE/, always ending in `.ko`.
    pub path: String,
    pub data: Vec<u8>,
    pub info: ModInfo,
}

/// Finds every module file below `moddir` (/lib/modules/RELEASE): name ->
/// path relative to `moddir`.
pub fn index_module_files(moddir: &Path) -> Result<BTreeMap<String, String>, ModuleError> {
    let mut index = BTreeMap::new();
    let mut dirs = vec![moddir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let read_err = |source| ModuleError::Read {
            path: dir.clone(),
            source,
        };
        for entry in fs::read_dir(&dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            let kind = entry.file_type().map_err(read_err)?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                let rel = path.strip_prefix(moddir).unwrap_or(&path);
                let rel = rel.to_string_lossy().into_owned();
                if module_name(&rel) != rel.rsplit('/').next().unwrap_or(&rel) {
                    index.insert(module_name(&rel), rel);
                }
            }
        }
    }
    Ok(index)
}

/// Reads a module file, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let err = |source| ModuleError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(err)?;
    let name = path.to_string_lossy();
    let mut reader: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new(file))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(file)
                .map_err(|e| err(std::io::Error::other(e)))?,
        )
    } else {
        Box::new(file)
    };
    let mut data = Vec::new();
    (&mut reader)
        .take(MAX_MODULE + 1)
        .read_to_end(&mut data)
        .map_err(err)?;
    if data.len() as u64 > MAX_MODULE {
        return Err(ModuleError::TooLarge(path.to_path_buf()));
    }
    Ok(data)
}

/// Picks `wanted` modules (those this kernel has; the rest are returned as
/// missing, e.g. because they are built in) and their dependencies from
/// `moddir`, in load order.
pub fn collect(moddir: &Path, wanted: &[&str]) -> Result<(Vec<Module>, Vec<String>), ModuleError> {
    let index = index_module_files(moddir)?;
    let (roots, missing): (Vec<String>, Vec<String>) = wanted
        .iter()
        .map(|w| canonical(w))
        .partition(|w| index.contains_key(w));
    let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
    let order = load_order(&roots, |name| {
        let rel = index
            .get(name)
            .ok_or_else(|| ModuleError::Unknown(name.to_string()))?;
        let data = read_module(&moddir.join(rel))?;
        let info = parse_modinfo(rel, &data)?;
        let path = format!("{}.ko", rel.split(".ko").next().unwrap_or(rel));
        let deps = info.depends.clone();
        loaded.insert(
            name.to_string(),
            Module {
                name: name.to_string(),
                path,
                data,
                info,
            },
        );
        Ok(deps)
    })?;
    let modules = order
        .iter()
        .filter_map(|name| loaded.remove(name))
        .collect();
    Ok((modules, missing))
}

/// `modules.dep` for the shipped modules, in depmod's convention: each line
/// lists all transitive dependencies, the one to load first last.
pub fn modules_dep_text(modules: &[Module]) -> String {
    let by_name: BTreeMap<&str, &Module> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut text = String::new();
    for m in modules {
        let order = load_order(std::slice::from_ref(&m.name), |n| {
            Ok(by_name
                .get(n)
                .map(|m| m.info.depends.clone())
                .unwrap_or_default())
        })
        .unwrap_or_default();
        let deps: Vec<&str> = order
            .iter()
            .rev()
            .filter(|n| **n != m.name)
            .filter_map(|n| by_name.get(n.as_str()).map(|d| d.path.as_str()))
            .collect();
        text.push_str(&m.path);
        text.push(':');
        for d in deps {
            text.push(' ');
            text.push_str(d);
        }
        text.push('\n');
    }
    text
}

/// `modules.alias` for the shipped modules ("alias PATTERN NAME").
pub fn modules_alias_text(modules: &[Module]) -> String {
    let mut text = String::new();
    for m in modules {
        for a in &m.info.aliases {
            text.push_str(&format!("alias {a} {}\n", m.name));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
";

    fn pos(order: &[String], name: &str) -> usize {
        order.iter().position(|n| n == name).unwrap()
    }

    #[test]
    fn resolves_sample_modules_dep_in_load_order() {
        let db = ModulesDep::parse(SAMPLE_DEP).unwrap();
        let order = db
            .resolve(&[
                "virtio_net".into(),
                "virtio-rng".into(),
                "virtio_pci".into(),
            ])
            .unwrap();
        assert_eq!(order.len(), 9);
        assert!(pos(&order, "failover") < pos(&order, "net_failover"));
        assert!(pos(&order, "net_failover") < pos(&order, "virtio_net"));
        assert!(pos(&order, "virtio") < pos(&order, "virtio_rng"));
        assert!(pos(&order, "virtio_pci_modern_dev") < pos(&order, "virtio_pci"));
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len(), "duplicates in {order:?}");
    }

    #[test]
    fn unknown_module_and_cycles_are_errors() {
        let db = ModulesDep::parse(SAMPLE_DEP).unwrap();
        assert!(matches!(
            db.resolve(&["nope".into()]),
            Err(ModuleError::Unknown(n)) if n == "nope"
        ));
        let cyc = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(
            cyc.resolve(&["a".into()]),
            Err(ModuleError::Cycle(_))
        ));
        assert!(matches!(
            ModulesDep::parse("no colon here\n"),
            Err(ModuleError::BadDepLine(1))
        ));
    }

    #[test]
    fn module_names_drop_extension_and_dashes() {
        assert_eq!(module_name("kernel/x/virtio-rng.ko"), "virtio_rng");
        assert_eq!(module_name("a/b/virtio_blk.ko.xz"), "virtio_blk");
        assert_eq!(module_name("z.ko.zst"), "z");
    }

    /// A minimal ELF64 relocatable with a section string table and a
    /// .modinfo section.
    pub(crate) fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        let info_off = elf.len();
        elf.extend_from_slice(modinfo);
        while elf.len() % 8 != 0 {
            elf.push(0);
        }
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut s = vec![0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            s[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend(s);
        };
        sh(0, 0, 0);
        sh(1, shstr_off, shstr.len());
        sh(11, info_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn parses_modinfo_fields() {
        let elf = fake_module(
            b"license=GPL\0depends=virtio,virtio_ring,net-failover\0alias=virtio:d00000001v*\0name=virtio_net\0",
        );
        let info = parse_modinfo("m", &elf).unwrap();
        assert_eq!(info.name.as_deref(), Some("virtio_net"));
        assert_eq!(info.depends, ["virtio", "virtio_ring", "net_failover"]);
        assert_eq!(info.aliases, ["virtio:d00000001v*"]);
        let none = parse_modinfo("m", &fake_module(b"depends=\0")).unwrap();
        assert!(none.depends.is_empty());
    }

    #[test]
    fn hostile_elf_is_an_error_not_a_panic() {
        assert!(parse_modinfo("m", b"junk").is_err());
        let elf = fake_module(b"depends=a\0");
        for cut in [10, 64, 100, elf.len() - 40] {
            assert!(parse_modinfo("m", &elf[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = elf.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_modinfo("m", &bad).is_err());
    }

    #[test]
    fn collects_from_a_module_tree_and_writes_dep_and_alias() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, info: &[u8]| {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, fake_module(info)).unwrap();
        };
        put("kernel/a/virtio.ko", b"name=virtio\0depends=\0");
        put("kernel/a/virtio_ring.ko", b"name=virtio_ring\0depends=\0");
        put(
            "kernel/b/virtio-rng.ko",
            b"name=virtio_rng\0depends=virtio_ring,virtio\0alias=virtio:d00000004v*\0",
        );
        put("kernel/c/unrelated.ko", b"name=unrelated\0");
        let (mods, missing) = collect(dir.path(), &["virtio_rng", "builtin_thing"]).unwrap();
        assert_eq!(missing, ["builtin_thing"]);
        let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_rng"]);
        let dep = modules_dep_text(&mods);
        assert!(
            dep.contains("kernel/b/virtio-rng.ko: kernel/a/virtio.ko kernel/a/virtio_ring.ko\n"),
            "{dep}"
        );
        // What we write parses back and resolves the same way.
        let back = ModulesDep::parse(&dep).unwrap();
        assert_eq!(
            back.resolve(&["virtio_rng".into()])
                .unwrap()
                .last()
                .unwrap(),
            "virtio_rng"
        );
        assert_eq!(
            modules_alias_text(&mods),
            "alias virtio:d00000004v* virtio_rng\n"
        );
    }
}
