//! The workload guest's inputs, made on the host at build time and the
//! same on every build of the same packages: a corpus of the root's own
//! files (Python's library, C headers, /usr/share: mostly text with some
//! binary, as real archives hold), lines of pseudo-random keys for sort,
//! and a generated C program for tcc.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The directories (under the root) whose files make the corpus, in order.
const CORPUS_DIRS: &[&str] = &["usr/lib/python3.11", "usr/include", "usr/share"];

/// `bytes` bytes: the regular files under [`CORPUS_DIRS`] in `root`, in
/// sorted path order, concatenated (and repeated when they are fewer).
pub fn corpus(root: &Path, bytes: usize) -> std::io::Result<Vec<u8>> {
    let mut files = Vec::new();
    for dir in CORPUS_DIRS {
        walk(&root.join(dir), &mut files);
    }
    let mut out = Vec::with_capacity(bytes);
    while out.len() < bytes {
        let before = out.len();
        for f in &files {
            let data = fs::read(f)?;
            let take = data.len().min(bytes - out.len());
            out.extend_from_slice(&data[..take]);
            if out.len() == bytes {
                break;
            }
        }
        if out.len() == before {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no corpus files in the root",
            ));
        }
    }
    Ok(out)
}

/// Regular files under `dir`, sorted by path, symlinks skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), out),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

/// `n` lines `KEY NUMBER line-I`, KEY eight hex digits from a 64-bit LCG.
pub fn sort_lines(n: usize) -> String {
    let mut s = String::with_capacity(n * 28);
    let mut x: u64 = 12345;
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let _ = writeln!(s, "{:08x} {} line-{i}", x >> 32, (x >> 8) % 100_000);
    }
    s
}

/// Functions in the generated C program.
const C_FUNCTIONS: usize = 300;

/// A C program of a few thousand lines: many small functions with loops,
/// switches and a struct, all called from `main`, which prints one sum.
pub fn c_source() -> String {
    let mut s = String::from("#include <stdio.h>\nstruct pt { long x, y; };\n");
    for f in 0..C_FUNCTIONS {
        let _ = write!(
            s,
            "static long f{f}(long a, long b) {{\n\
             \x20   struct pt p = {{ a + {f}, b ^ {m7} }};\n\
             \x20   long r = 0;\n\
             \x20   for (int i = 0; i < {n}; i++) {{\n\
             \x20       switch ((p.x + i) & 3) {{\n\
             \x20       case 0: r += p.x * {m11}; break;\n\
             \x20       case 1: r ^= p.y << {s7}; break;\n\
             \x20       case 2: r -= (p.x - p.y) / {d5}; break;\n\
             \x20       default: r += i * {f};\n\
             \x20       }}\n\
             \x20       p.x = p.x * 3 + (r & 7);\n\
             \x20   }}\n\
             \x20   return r + (a > b ? a : b);\n\
             }}\n",
            m7 = f * 7,
            n = 3 + f % 5,
            m11 = f % 11 + 1,
            s7 = f % 7,
            d5 = f % 5 + 1,
        );
    }
    s.push_str("int main(void) {\n    long acc = 1;\n");
    for f in 0..C_FUNCTIONS {
        let _ = writeln!(s, "    acc = f{f}(acc & 0xffff, {f}) + acc;");
    }
    s.push_str("    printf(\"%ld\\n\", acc);\n    return 0;\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_program_has_a_few_thousand_lines_and_one_main() {
        let c = c_source();
        assert!(c.lines().count() > 4000, "{}", c.lines().count());
        assert_eq!(c.matches("int main(void)").count(), 1);
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }

    #[test]
    fn sort_lines_are_deterministic_and_unsorted() {
        let a = sort_lines(1000);
        assert_eq!(a, sort_lines(1000));
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines.len(), 1000);
        let mut sorted = lines.clone();
        sorted.sort();
        assert_ne!(lines, sorted);
    }

    #[test]
    fn the_corpus_repeats_short_trees_to_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let py = dir.path().join("usr/lib/python3.11");
        fs::create_dir_all(&py).expect("mkdir");
        fs::write(py.join("b.py"), b"bbb").expect("write");
        fs::write(py.join("a.py"), b"aa").expect("write");
        assert_eq!(corpus(dir.path(), 12).expect("corpus"), b"aabbbaabbbaa");
        assert!(corpus(&dir.path().join("none"), 5).is_err());
    }
}
