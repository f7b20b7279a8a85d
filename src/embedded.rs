//! What ships inside the binary: pgchain's runtime SQL, the built-in
//! templates and the example projects, each as `(relative path, contents)`
//! sorted by path (written by `build.rs` from `sql/pgchain/` and the examples).

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// A built-in template's source by its name (`l0_upsert`).
pub fn template(name: &str) -> Option<&'static str> {
    let file = format!("sql/pgchain/templates/{name}.sql.j2");
    TEMPLATES.iter().find(|(p, _)| *p == file).map(|(_, t)| *t)
}

/// The names of the built-in templates, sorted.
pub fn template_names() -> Vec<&'static str> {
    TEMPLATES
        .iter()
        .filter_map(|(p, _)| p.rsplit('/').next()?.strip_suffix(".sql.j2"))
        // `_macros.sql.j2` and the like are imported by templates, not used alone.
        .filter(|n| !n.starts_with('_'))
        .collect()
}
