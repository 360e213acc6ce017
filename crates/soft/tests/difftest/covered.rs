//! The generated list of covered forms (`COVERED.md`).

/// The forms the generator draws, by area and mnemonic, as `COVERED.md`
/// shows them.
pub fn text() -> String {
    let mut out = String::from(
        "# Forms covered by the differential harness\n\n\
         Generated from `tests/difftest/forms/` by `tests/differential.rs`;\n\
         regenerate with `DIFFTEST_REGEN=1 cargo test --release -p soft \
         --test differential covered`.\n",
    );
    for (area, forms) in super::forms::AREAS {
        out.push_str(&format!("\n## {area} ({} forms)\n\n", forms.len()));
        let mut by_mnemonic = std::collections::BTreeMap::<String, Vec<String>>::new();
        for c in forms.iter() {
            by_mnemonic
                .entry(format!("{:?}", c.mnemonic()))
                .or_default()
                .push(format!("`{c:?}`"));
        }
        for (m, codes) in by_mnemonic {
            out.push_str(&format!("- {m}: {}\n", codes.join(", ")));
        }
    }
    out
}
