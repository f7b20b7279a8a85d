//! `${VAR}` and `${VAR:-default}` in pipelines.yaml, filled from the
//! environment before parsing. Comments are left alone, `$${` writes a literal
//! `${`. Substitution never adds lines, so parser line numbers stay true: a
//! value with line breaks (a PEM certificate) goes in as one double-quoted
//! line, and only where it is a whole value.

/// Returns the substituted text, or every unset variable as `(line, message)`.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = split_comment(line);
        let mut rest = code;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(t) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = t;
            } else if let Some(t) = tail.strip_prefix("${") {
                let Some(end) = t.find('}') else {
                    problems.push((i + 1, "`${` without a closing `}`".to_string()));
                    out.push_str(tail);
                    rest = "";
                    continue;
                };
                let expr = &t[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match (lookup(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => {
                        let whole = whole_value(&out, &t[end + 1..]);
                        if v.contains(['\n', '\r']) && !whole {
                            problems.push((
                                i + 1,
                                format!(
                                    "environment variable `{name}` holds a line break: it can stand only as a whole value (`key: ${{{name}}}`), not inside other text"
                                ),
                            ));
                        } else {
                            out.push_str(&yaml_safe(&v, whole));
                        }
                    }
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => problems.push((
                        i + 1,
                        format!(
                            "environment variable `{name}` is not set (write ${{{name}:-default}} to give a default)"
                        ),
                    )),
                }
                rest = &t[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// True when the substitution is a whole YAML value: only `key:` or `- `
/// before it on its line, nothing after it.
fn whole_value(out: &str, after: &str) -> bool {
    let line = &out[out.rfind('\n').map_or(0, |i| i + 1)..];
    let before = line.trim_end();
    (before.ends_with(':') || before.trim_start() == "-" || before.is_empty())
        && after.trim().is_empty()
}

/// A value that would change how the line parses (`: `, ` #`, a leading
/// indicator) is written as a double-quoted YAML string when it is a whole
/// value; anything else goes in as it is, so numbers stay numbers.
fn yaml_safe(v: &str, whole: bool) -> String {
    let special = v.contains(['\n', '\r'])
        || v.contains(": ")
        || v.contains(" #")
        || v.ends_with(':')
        || v.starts_with([
            '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '[', ']', '{', '}', '#', ',', '?',
        ])
        || v.starts_with("- ")
        || v != v.trim();
    if whole && special {
        serde_json::to_string(v).expect("a string serialises")
    } else {
        v.to_string()
    }
}

/// Splits a YAML line at a `#` that starts a comment (line start or after
/// white space, outside quotes).
fn split_comment(line: &str) -> (&str, &str) {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line.split_at(i),
            _ => {}
        }
        prev = c;
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::substitute;

    fn env(name: &str) -> Option<String> {
        match name {
            "BROKERS" => Some("k1:9092,k2:9092".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn fills_values_and_defaults() {
        let text = "a: ${BROKERS}\nb: ${MISSING:-x:1}\nc: ${EMPTY:-d}\nd: $${LITERAL} $5\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "a: k1:9092,k2:9092\nb: x:1\nc: d\nd: ${LITERAL} $5\n"
        );
    }

    #[test]
    fn values_that_would_break_the_yaml_are_quoted() {
        let env = |n: &str| match n {
            "PASS" => Some("p@ss: #1 'x'".into()),
            "STAR" => Some("*secret".into()),
            "N" => Some("8".into()),
            _ => None,
        };
        let text = "a: ${PASS}\nb: ${STAR}\nc: ${N}\nd: \"u:${PASS}\"\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "a: \"p@ss: #1 'x'\"\nb: \"*secret\"\nc: 8\nd: \"u:p@ss: #1 'x'\"\n"
        );
    }

    #[test]
    fn a_multi_line_value_is_one_quoted_line_and_only_a_whole_value() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\\x\"y\n-----END CERTIFICATE-----\n";
        let env = |n: &str| (n == "PEM").then(|| pem.to_string());
        let text = "a:\n  ca: ${PEM}\nl:\n  - ${PEM}\nb: 2\n";
        let out = substitute(text, env).unwrap();
        assert_eq!(out.lines().count(), text.lines().count());
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["a"]["ca"].as_str(), Some(pem));
        assert_eq!(v["l"][0].as_str(), Some(pem));
        assert_eq!(v["b"].as_i64(), Some(2));
        let problems = substitute("a: \"x${PEM}\"\nb: ${PEM} # c\nc: k=${PEM}\n", env).unwrap_err();
        assert_eq!(problems.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!(problems[0].1.contains("`PEM` holds a line break"));
        assert!(!problems[0].1.contains("BEGIN"));
    }

    #[test]
    fn leaves_comments_alone_and_names_unset_lines() {
        assert_eq!(
            substitute("a: 1 # ${NOPE}\n", env).unwrap(),
            "a: 1 # ${NOPE}\n"
        );
        let problems = substitute("a: 1\nb: ${NOPE}\nc: '${ALSO}'\n", env).unwrap_err();
        assert_eq!(problems.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 3]);
        assert!(problems[0].1.contains("`NOPE` is not set"));
    }
}
