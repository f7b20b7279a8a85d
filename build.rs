//! Embeds pgchain's own SQL and the example projects into the binary.
//!
//! `sql/pgchain/*.sql` is the runtime (applied by `pgchain migrate` before a
//! project's own migrations), `sql/pgchain/templates/*.sql.j2` the built-in
//! templates, and the example projects are what `pgchain init --example`
//! writes. Each becomes a `&[(relative path, contents)]` sorted by path, so
//! the binary works from any directory and a new file needs no list edited.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut out = String::new();
    embed(&mut out, "RUNTIME", &root, &[("sql/pgchain", ".sql")]);
    embed(
        &mut out,
        "TEMPLATES",
        &root,
        &[("sql/pgchain/templates", ".sql.j2")],
    );
    // The customer example is the repository's own root project.
    embed(
        &mut out,
        "EXAMPLE_CUSTOMER",
        &root,
        &[("pipelines.yaml", ""), ("sql/migrations", ".sql")],
    );
    let campaign = root.join("examples/campaign");
    embed(
        &mut out,
        "EXAMPLE_CAMPAIGN",
        &campaign,
        &[("pipelines.yaml", ""), ("sql/migrations", ".sql")],
    );
    let blank = root.join("examples/blank");
    embed(&mut out, "EXAMPLE_BLANK", &blank, &[("pipelines.yaml", "")]);
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(dest, out).unwrap();
}

/// `pub static NAME: &[(&str, &str)]`: every file of each (file or folder,
/// suffix) under `base`, named relative to `base`.
fn embed(out: &mut String, name: &str, base: &Path, sources: &[(&str, &str)]) {
    let mut files = Vec::new();
    for (rel, suffix) in sources {
        let path = base.join(rel);
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_file() {
            files.push((rel.to_string(), path));
            continue;
        }
        for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        {
            let p = entry.unwrap().path();
            let file = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_file() && file.ends_with(suffix) {
                files.push((format!("{rel}/{file}"), p));
            }
        }
    }
    files.sort();
    writeln!(out, "pub static {name}: &[(&str, &str)] = &[").unwrap();
    for (rel, path) in files {
        writeln!(
            out,
            "    ({rel:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
}
