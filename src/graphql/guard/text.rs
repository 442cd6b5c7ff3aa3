//! The check on a query's *text*, made before anything parses it.
//!
//! async-graphql-parser 7.2 recurses once per nesting level of list and object *value literals*
//! with no limit of its own: `{ f(a: [[[[...]]]]) }` a couple of thousand levels deep (4 KB)
//! overflows a 2 MiB tokio worker stack and aborts the whole process. One linear pass over the
//! text, skipping strings and comments, bounds every kind of bracket before the parser sees it.

/// True when no bracket (`{`, `[`, `(`) outside strings and comments nests deeper than `max_depth`.
pub fn nesting_within(text: &str, max_depth: usize) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 3;
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_comments_do_not_count() {
        let q = "# {{{{ subscription\nquery { a(s: \"{{{[[[\", b: \"\"\"(((\"\"\") }";
        assert!(nesting_within(q, 2));
        assert!(!nesting_within("{ a { b { c } } }", 2));
    }

    #[test]
    fn deep_value_literals_are_caught() {
        let q = format!("{{ products(first: {}1{}) {{ id }} }}", "[".repeat(5000), "]".repeat(5000));
        assert!(!nesting_within(&q, 64));
        let q = format!("{{ a(o: {}) }}", "{x: ".repeat(100) + &"}".repeat(100));
        assert!(!nesting_within(&q, 64));
        assert!(nesting_within("{ a(o: {x: [1, {y: 2}]}) }", 64));
    }
}
